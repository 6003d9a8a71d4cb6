"""A batch's list of jobs: a CSV or JSONL file (one job a row: ``video`` or ``avatar``, ``audio``, ``out`` and any
option by its request field name) or a folder pairing ``name.mp4`` with ``name.wav`` / ``.mp3`` / ``.flac`` /
``.m4a``, made into requests (pipeline/jobs/batch.py runs them).

* :func:`read_jobs` — every row as a :class:`BatchJob`: its request, or why it cannot make one (the field named as
  the user wrote it). Paths are relative to the list's folder; outputs go to the out folder (default ``dubbed/``
  beside the inputs). A row whose output is any row's input, or another row's output, is refused.
* :func:`check_files` — the inputs exist (what ``--dry-run`` checks besides the fields).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .fields import INPUT, OPTION, RequestError, as_sent, names_table
from .requests import DubRequest, Request, SpeakRequest

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".m4a")      # searched in this order beside each video
DEFAULT_OUT_DIR = "dubbed"


@dataclass
class BatchJob:
    """One row: its label, and the request it makes or why it cannot make one."""

    label: str
    request: Optional[Request] = None
    error: Optional[RequestError] = None


def default_out_dir(source: str) -> str:
    folder = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    return os.path.join(os.path.abspath(folder), DEFAULT_OUT_DIR)


def read_jobs(source: str, out_dir: Optional[str] = None, defaults: Optional[Dict[str, Any]] = None,
              machine: Optional[Dict[str, Any]] = None, masks: bool = False) -> List[BatchJob]:
    """The jobs of ``source`` (a folder, a ``.csv`` or a ``.jsonl``). ``defaults``: options for every row (a row's
    own value wins); ``machine``: the device, dtype and downloads every job runs with; ``masks``: every dub also
    writes its mask as ``<out>.mask.mp4`` (a row's ``mask_out`` wins)."""
    if not os.path.exists(source):
        raise RequestError("jobs", f"{source} does not exist", "give a folder of videos, a .csv or a .jsonl file")
    out_dir = os.path.abspath(out_dir or default_out_dir(source))
    if os.path.isdir(source):
        rows = folder_rows(source)
    elif source.lower().endswith(".csv"):
        rows = csv_rows(source)
    elif source.lower().endswith((".jsonl", ".ndjson")):
        rows = jsonl_rows(source)
    else:
        raise RequestError("jobs", f"{os.path.basename(source)} is not a folder, .csv or .jsonl",
                           "list the jobs in a .csv or .jsonl file, or give a folder pairing name.mp4 with name.wav")
    base = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(source))
    jobs = [make_job(label, row, base, out_dir, defaults or {}, machine or {}, masks) for label, row in rows]
    return refuse_shared_outputs(jobs)


def refuse_shared_outputs(jobs: List[BatchJob]) -> List[BatchJob]:
    """A row whose output is any row's input (``--out-dir`` pointing at the inputs) is refused, whatever
    ``--overwrite`` says: a source is never replaced by a dub. A second row writing the same output is refused too
    (it would replace the first one's result)."""
    inputs = {os.path.realpath(p): job.label for job in jobs if job.request is not None
              for p in (getattr(job.request, "video", None), job.request.audio) if p}
    first: Dict[str, str] = {}
    for job in jobs:
        if job.request is None:
            continue
        out = os.path.abspath(job.request.out)
        if os.path.realpath(out) in inputs:
            job.request, job.error = None, RequestError(
                "out", f"{os.path.basename(out)} is the input of {inputs[os.path.realpath(out)]}",
                "choose an --out-dir (or out) apart from the inputs: a source is never replaced")
        elif out in first:
            job.request, job.error = None, RequestError("out", f"{os.path.basename(out)} is also the output of "
                                                               f"{first[out]}", "give each row its own out")
        else:
            first[out] = job.label
    return jobs


def folder_rows(folder: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``name.mp4`` + ``name.wav`` (or .mp3, .flac, .m4a) pairs, by name; a video without a voice is a row that
    fails with the reason."""
    names = sorted(os.listdir(folder))
    present = {n.lower(): n for n in names}            # clip.WAV pairs with clip.mp4
    videos = [n for n in names if os.path.splitext(n)[1].lower() in VIDEO_EXTS and not n.startswith(".")
              and os.path.isfile(os.path.join(folder, n))]
    stems = [os.path.splitext(n)[0].lower() for n in videos]
    rows = []
    for name in videos:
        stem, ext = os.path.splitext(name)
        voice = next((present[(stem + e).lower()] for e in AUDIO_EXTS if (stem + e).lower() in present), None)
        out = stem + ".mp4" if stems.count(stem.lower()) == 1 else f"{stem}_{ext[1:].lower()}.mp4"  # clip.mov, clip.mp4
        rows.append((name, {"video": name, "audio": voice, "out": out,
                            "_missing": None if voice else
                            ("audio", f"no voice track beside {name}",
                             f"add {stem}.wav (or .mp3, .flac, .m4a) to the folder")}))
    return rows


def csv_rows(path: str) -> List[Tuple[str, Dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return [(f"row {i}", {k.strip(): v for k, v in row.items() if k and v is not None and str(v).strip() != ""})
                for i, row in enumerate(reader, start=2)]


def jsonl_rows(path: str) -> List[Tuple[str, Dict[str, Any]]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                row = {"_missing": ("row", f"not valid JSON ({exc})", "write one JSON object per line")}
            if not isinstance(row, dict):
                row = {"_missing": ("row", "is not a JSON object", 'write {"video": ..., "audio": ...} per line')}
            rows.append((f"line {i}", row))
    return rows


MASK_SUFFIX = ".mask.mp4"     # batch --masks: the mask of out.mp4 is out.mask.mp4


def make_job(label: str, row: Dict[str, Any], base: str, out_dir: str, defaults: Dict[str, Any],
             machine: Dict[str, Any], masks: bool = False) -> BatchJob:
    """A row's request: paths relative to the list's folder (outputs: to ``out_dir``), the command line's options
    under the row's own; any problem becomes the row's error."""
    row = dict(row)
    missing = row.pop("_missing", None)
    kind = SpeakRequest if row.get("avatar") else DubRequest
    if row.get("video") and row.get("avatar"):
        return BatchJob(label, error=RequestError("avatar", "a row takes a video or an avatar, not both",
                                                  "leave out one of the two columns"))
    try:
        if missing:
            raise RequestError(*missing)
        for key in ("video", "audio"):
            if row.get(key):
                row[key] = os.path.join(base, str(row[key]))
        row["out"] = os.path.join(out_dir, str(row.get("out") or default_out_name(row)))
        if row.get("mask_out"):
            row["mask_out"] = os.path.join(out_dir, str(row["mask_out"]))
        elif masks and kind is DubRequest:
            row["mask_out"] = os.path.splitext(row["out"])[0] + MASK_SUFFIX
        known = names_table(kind)
        options = {k: v for k, v in defaults.items() if k in known}
        values = {**options, **row}
        request = kind.from_mapping(values, roles=(INPUT, OPTION)).replace(**machine)
        return BatchJob(label, request.validate())
    except RequestError as exc:
        return BatchJob(label, error=as_sent(exc, kind, row))


def default_out_name(row: Dict[str, Any]) -> str:
    """``clip.mp4`` for the video ``clip.mov``; ``host_voice.mp4`` for the avatar ``host`` speaking ``voice.wav``."""
    if row.get("video"):
        return os.path.splitext(os.path.basename(str(row["video"])))[0] + ".mp4"
    voice = os.path.splitext(os.path.basename(str(row.get("audio") or "voice")))[0]
    return f"{row.get('avatar') or 'avatar'}_{voice}.mp4"


def check_files(request: Request) -> None:
    """The inputs exist (``--dry-run`` checks this without decoding anything)."""
    for key in ("video", "audio"):
        path = getattr(request, key, None)
        if path and not os.path.isfile(path):
            raise RequestError(key, f"{path} does not exist", "fix the path; relative paths start at the list's folder")
    if isinstance(request, SpeakRequest):
        from ..avatars import AvatarError, read_manifest

        try:
            read_manifest(request.avatar)
        except AvatarError as exc:
            raise RequestError("avatar", str(exc), "prepare it first (avatar prepare), or fix the name") from None
