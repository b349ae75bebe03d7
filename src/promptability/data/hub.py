"""P3 (``bigscience/P3`` on the Hugging Face Hub) fetched into the folder layout the P3 reader takes.

Only the files a template needs are fetched: per split, its TFRecord shards
``data/<template>/<split>.tfrecord-NNNNN-of-NNNNN`` and ``info.<split>.json`` (the feature
shapes the reader uses). A T0 training template needs ``train``; every other template (held-out,
dev, any other P3 name) needs its evaluation split and the split its few-shot draws come from
(``validation`` and ``train``; StoryCloze: ``test`` and ``validation``), as ``readers`` says.

Files go through the Hub cache (``HF_HUB_CACHE``, or ``cache_dir``): huggingface_hub resumes a
partial download there, and a later fetch of the same commit is served from it. Each file is
then hard-linked into ``out/data/<template>/`` (copied across file systems) under a temporary
name and renamed, so a file in ``out`` is always whole; one whose size is the Hub's is kept as is.
With ``HF_HUB_OFFLINE=1`` the Hub is never asked: the revision resolves through the cache's
``refs/`` and the files come from its snapshot (or from ``out`` itself); the error names what
neither holds. ``out/p3-fetch.json`` records the repository, the revision asked for, the commit
it resolved to, and each template's splits and files.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from promptability.data import registry
from promptability.data.p3 import TFRECORD_RE, p3_format, p3_splits
from promptability.data.readers import eval_split_for, train_split_for
from promptability.data.schema import DataError
from promptability.io import BadFileError, atomic_path, read_json_file, write_json_atomic, write_text_atomic

P3_REPO = "bigscience/P3"
# The branch, not a commit (none could be checked from here): the manifest records the commit a
# fetch resolved to, and passing that as the revision fetches the very same files again.
P3_REVISION = "main"
MANIFEST = "p3-fetch.json"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# Templates the Hub repository does not hold, by name prefix: why, and where their files come from.
NOT_ON_HUB = {
    "story_cloze_2016_": (
        "StoryCloze is not in bigscience/P3 (its data needs a manual download: request it at "
        "https://cs.rochester.edu/nlp/rocstories/; the paper's authors got P3's files for it from BigScience)"
    ),
}


class P3FetchError(DataError):
    """Templates could not be fetched; the message lists each with its reason and what to do."""


@dataclass
class FetchReport:
    """What one ``fetch_p3`` did: ``fetched`` and ``kept`` count files, ``provided`` the templates found in place."""

    out: Path
    commit: str
    templates: dict[str, list[str]] = field(default_factory=dict)  # template -> splits now in out
    fetched: int = 0
    kept: int = 0
    provided: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # template -> why it is not in out


def select_templates(
    *, train: bool = False, heldout: bool = False, dev: bool = False, names: Iterable[str] = ()
) -> list[str]:
    """The T0 training / held-out / dev templates asked for, then ``names``, each once, in that order."""
    chosen = registry.train_templates() if train else []
    chosen += sorted(registry.heldout_templates()) if heldout else []
    chosen += registry.dev_templates() if dev else []
    for name in names:
        if not _NAME.match(name):
            raise P3FetchError(f"--templates: {name!r} is not a P3 template name (letters, digits, '_', '.', '-')")
        chosen.append(name)
    return list(dict.fromkeys(chosen))


def template_splits(template: str) -> list[str]:
    """The splits ``template`` needs: train for the T0 training mixture, else few-shot and evaluation splits."""
    if template in set(registry.train_templates()):
        return ["train"]
    return sorted({train_split_for(template), eval_split_for(template)})


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads the variable once, at import; a later setting must count too.
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _hub_listing(repo_id: str, revision: str, templates: set[str]) -> tuple[str, dict[str, dict[str, int]]]:
    """Asks the Hub: the commit ``revision`` is, and ``{template: {file name: size}}`` of its data/ folders."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi()
    commit = revision if _COMMIT.match(revision) else api.repo_info(repo_id, repo_type="dataset", revision=revision).sha
    if commit is None:
        raise P3FetchError(f"the Hub did not say which commit revision '{revision}' of {repo_id} is")
    listing: dict[str, dict[str, int]] = {}
    tree = api.list_repo_tree(repo_id, "data", recursive=True, revision=commit, repo_type="dataset")
    for entry in tree:
        parts = entry.path.split("/")
        if isinstance(entry, RepoFile) and len(parts) == 3 and parts[1] in templates:
            # an LFS file's own size: the one the downloaded file has
            listing.setdefault(parts[1], {})[parts[2]] = entry.lfs.size if entry.lfs else entry.size
    return commit, listing


def _cache_listing(
    repo_id: str, revision: str, templates: set[str], cache_dir: Path
) -> tuple[str | None, dict[str, dict[str, int]]]:
    """The same from the Hub cache alone: its ``refs/<revision>`` and ``snapshots/<commit>/data/``."""
    from huggingface_hub.file_download import repo_folder_name

    storage = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="dataset")
    commit = revision if _COMMIT.match(revision) else None
    ref = storage / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
    if commit is None:
        return None, {}
    listing: dict[str, dict[str, int]] = {}
    for template in templates:
        folder = storage / "snapshots" / commit / "data" / template
        if folder.is_dir():  # a snapshot entry is a link to its blob; is_file/stat follow it
            listing[template] = {f.name: f.stat().st_size for f in folder.iterdir() if f.is_file()}
    return commit, listing


def _wanted_files(files: dict[str, int], splits: list[str]) -> tuple[dict[str, int], str | None]:
    """The shards and info file of each split among ``files`` (name -> size), or why they are not all there."""
    wanted: dict[str, int] = {}
    for split in splits:
        shards = {name: m for name in files if (m := TFRECORD_RE.match(name)) and m["split"] == split}
        if not shards:
            have = sorted({m["split"] for name in files if (m := TFRECORD_RE.match(name))})
            return {}, f"no '{split}' split (it has: {', '.join(have) or 'no TFRecord files'})"
        counts = {int(m["count"]) for m in shards.values()}
        indices = {int(m["index"]) for m in shards.values()}
        if len(counts) != 1 or indices != set(range(counts.pop())):
            return {}, f"the '{split}' shards are not all there ({', '.join(sorted(shards))})"
        wanted.update({name: files[name] for name in sorted(shards)})
        if f"info.{split}.json" in files:
            wanted[f"info.{split}.json"] = files[f"info.{split}.json"]
    return wanted, None


def _absent_reason(template: str, splits: list[str], out: Path, where: str) -> str:
    for prefix, why in NOT_ON_HUB.items():
        if template.startswith(prefix):
            files = ", ".join(f"{s}.tfrecord-00000-of-00001 + info.{s}.json" for s in splits)
            return f"{why}; put its P3 files ({files}) or a save_to_disk folder in {out / 'data' / template}/ and rerun"
    return where


def _place(cached: Path, target: Path) -> None:
    """``cached`` at ``target``: a hard link when both are on one file system, else a copy; atomic either way."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(cached.resolve(), tmp)
        except OSError:
            shutil.copyfile(cached, tmp)


def _read_manifest(out: Path, repo_id: str) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.is_file():
        return {}
    manifest = read_json_file(path, "P3 fetch record", ("repo", "commit", "templates"))
    if manifest["repo"] != repo_id:
        raise BadFileError(f"{path}: {out} holds files of {manifest['repo']}, not {repo_id}; fetch into another folder")
    return manifest


def _remember_ref(cache_dir: Path, repo_id: str, revision: str, commit: str) -> None:
    """``refs/<revision>`` in the cache, as snapshot_download writes it: an offline fetch resolves the name later."""
    from huggingface_hub.file_download import repo_folder_name

    if revision != commit:
        ref = cache_dir / repo_folder_name(repo_id=repo_id, repo_type="dataset") / "refs" / revision
        if not ref.is_file() or ref.read_text(encoding="utf-8").strip() != commit:
            write_text_atomic(ref, commit)


def _resolve(
    repo_id: str, revision: str, templates: set[str], cache_dir: Path, offline: bool
) -> tuple[str | None, dict[str, dict[str, int]], str]:
    """The commit, the listing, and what a template absent from the listing means (for the error)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if not offline:
        try:
            commit, listing = _hub_listing(repo_id, revision, templates)
            _remember_ref(cache_dir, repo_id, revision, commit)
            return commit, listing, f"{repo_id} has no such folder data/<template>/ at commit {commit[:12]}"
        except RevisionNotFoundError:
            raise P3FetchError(f"--revision: {repo_id} has no revision '{revision}'") from None
        except RepositoryNotFoundError:
            raise P3FetchError(f"the Hub has no dataset repository '{repo_id}' (or it is private)") from None
        except P3FetchError:
            raise
        except Exception as err:  # a connection failure of any kind: fall back on the cache, as huggingface_hub does
            why = f"not in the Hub cache ({cache_dir}), and the Hub could not be reached ({type(err).__name__}: {err})"
    else:
        why = f"not in the Hub cache ({cache_dir}), and HF_HUB_OFFLINE is set: unset it to download"
    cached_commit, cached = _cache_listing(repo_id, revision, templates, cache_dir)
    return cached_commit, cached, why


def _plan(
    templates: list[str], splits: list[str] | None, listing: dict[str, dict[str, int]], out: Path, why: str
) -> tuple[FetchReport, list[tuple[str, str, int]]]:
    """Per template: its files to fetch (template, name, size), or its folder already in ``out``, or why neither."""
    report = FetchReport(out=out, commit="")
    todo: list[tuple[str, str, int]] = []
    for template in templates:
        need = list(splits) if splits else template_splits(template)
        files = listing.get(template)
        wanted, problem = _wanted_files(files, need) if files is not None else ({}, None)
        folder = out / "data" / template
        if wanted:
            todo += [(template, name, size) for name, size in wanted.items()]
            report.templates[template] = need
        elif p3_format(folder) is not None and set(need) <= set(p3_splits(folder)):
            report.provided.append(template)  # put there by hand (StoryCloze), or by an earlier fetch
            report.templates[template] = need
        elif problem:
            report.missing[template] = f"data/{template}/ has {problem}"
        else:
            report.missing[template] = _absent_reason(template, need, out, why.replace("<template>", template))
    return report, todo


class _QuietTqdm(tqdm):
    """huggingface_hub's per-file byte bars, never shown (progress off)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "disable": True})


def _download(
    todo: list[tuple[str, str, int]], report: FetchReport, repo_id: str, cache: Path, offline: bool, progress: bool
) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for template, name, size in tqdm(todo, desc="P3 files", unit=" file", disable=None if progress else True):
        target = report.out / "data" / template / name
        if target.is_file() and target.stat().st_size == size:
            report.kept += 1
            continue
        try:
            cached = hf_hub_download(
                repo_id, f"data/{template}/{name}", repo_type="dataset", revision=report.commit,
                cache_dir=cache, local_files_only=offline, tqdm_class=None if progress else _QuietTqdm,
            )  # fmt: skip
        except LocalEntryNotFoundError:
            report.missing[template] = (
                f"data/{template}/{name} is not in the Hub cache ({cache}) nor whole in {report.out}"
            )
            continue
        except Exception as err:  # the network or the Hub failed: everything whole so far stays
            raise P3FetchError(
                f"data/{template}/{name}: the download failed ({type(err).__name__}: {err}); rerun the same command "
                f"to resume (whole files in {report.out} are kept, huggingface_hub resumes the partial one)"
            ) from err
        _place(Path(cached), target)
        report.fetched += 1


def fetch_p3(
    out: str | os.PathLike[str],
    templates: Iterable[str],
    *,
    splits: Iterable[str] | None = None,
    revision: str = P3_REVISION,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FetchReport:
    """Fetches ``templates`` of P3 into ``out/data/<template>/`` (see the module docstring).

    ``splits`` replaces each template's own splits (``template_splits``); ``cache_dir`` defaults to the
    Hub cache; with ``HF_HUB_OFFLINE`` set the Hub is never asked. Templates that could not be fetched raise
    ``P3FetchError`` listing them, after every other template is in place and recorded.
    """
    from huggingface_hub import constants

    out, names = Path(out), list(dict.fromkeys(templates))
    if not names:
        raise P3FetchError("no templates chosen: give --train, --heldout, --dev or --templates NAME...")
    if not revision or revision.startswith("/") or ".." in revision.split("/"):
        raise P3FetchError(f"--revision: {revision!r} is not a branch, tag or commit name")  # it names a file in refs/
    cache = Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()
    offline = _offline()
    manifest = _read_manifest(out, P3_REPO)
    commit, listing, why = _resolve(P3_REPO, revision, set(names), cache, offline)
    if commit is None and manifest.get("revision") == revision:
        commit = manifest["commit"]  # the cache has no ref for it, but this folder was fetched at that revision
    if commit is None:
        raise P3FetchError(
            f"the Hub cache ({cache}) has no revision '{revision}' of {P3_REPO} and the Hub was not asked ({why}); "
            "run once online, or pass --revision COMMIT of a snapshot in the cache"
        )
    if manifest and manifest["commit"] != commit:
        raise P3FetchError(
            f"{out} holds P3 files of commit {manifest['commit']}, but revision '{revision}' is {commit} now: "
            f"fetch into another folder, or pass --revision {manifest['commit']}"
        )
    for template, record in manifest.get("templates", {}).items():
        if template in names and "files" in record:
            listing.setdefault(template, record["files"])  # whole in out already, even when the cache is gone
    report, todo = _plan(names, list(splits) if splits else None, listing, out, why)
    report.commit = commit
    _download(todo, report, P3_REPO, cache, offline, progress)
    records = dict(manifest.get("templates", {}))
    for template, need in report.templates.items():
        if template in report.missing:
            continue
        files = {name: size for t, name, size in todo if t == template}
        records[template] = {"splits": need, "files": files} if files else {"splits": need, "provided": True}
    manifest = {"repo": P3_REPO, "revision": revision, "commit": commit, "templates": records}
    write_json_atomic(out / MANIFEST, manifest)
    if report.missing:
        done = len(names) - len(report.missing)
        by_reason: dict[str, list[str]] = {}
        for template, why in sorted(report.missing.items()):
            by_reason.setdefault(why, []).append(template)
        lines = "\n".join(
            f"  {names[0]}: {why}" if len(names) == 1 else f"  {len(names)} templates, {why}: {', '.join(names)}"
            for why, names in by_reason.items()
        )
        raise P3FetchError(
            f"{len(report.missing)} of {len(names)} P3 templates could not be fetched "
            f"(the other {done} are in {out / 'data'}):\n{lines}"
        )
    return report
