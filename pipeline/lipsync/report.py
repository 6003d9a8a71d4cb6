"""The lip-sync report: which backend ran on which frames, what passed through, every fallback and why."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from ..types import ranges_text


@dataclass
class LipSyncReport:
    requested: str
    num_frames: int = 0
    synced: Dict[str, List[int]] = field(default_factory=dict)   # backend -> output frames it synced
    passed_through: List[int] = field(default_factory=list)      # output frames copied unchanged (cutaways)
    kept_silent: List[int] = field(default_factory=list)         # of those, face frames kept during silence
    fallbacks: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    batch_sizes: List[int] = field(default_factory=list)
    seconds: float = 0.0
    landmarks: str = ""                                          # where the crop boxes came from (pipeline/landmarks)

    def add(self, backend: str, ks: Sequence[int]) -> None:
        self.synced.setdefault(backend, []).extend(int(k) for k in ks)

    def shrunk(self, backend: str, unit_label: str, size: int) -> None:
        """A backend ran out of memory and its unit (batch size, chunk length) was lowered to ``size``."""
        if unit_label == "batch size":
            self.batch_sizes.append(int(size))
        else:
            self.notes.append(f"{backend}: out of memory; {unit_label} lowered to {size}")

    @classmethod
    def joined(cls, parts: Sequence["LipSyncReport"]) -> "LipSyncReport":
        """One report of a run made in shards (pipeline/jobs/shards.py): frames, fallbacks and notes added up."""
        out = cls(requested=parts[0].requested, landmarks=parts[0].landmarks)
        for part in parts:
            out.num_frames += part.num_frames
            for backend, ks in part.synced.items():
                out.add(backend, ks)
            out.passed_through.extend(part.passed_through)
            out.kept_silent.extend(part.kept_silent)
            out.fallbacks.extend(f for f in part.fallbacks if f not in out.fallbacks)
            out.notes.extend(n for n in part.notes if n not in out.notes)
            out.seconds = max(out.seconds, part.seconds)
        sizes = [b for part in parts for b in part.batch_sizes]
        out.batch_sizes = sizes[:1] + ([min(sizes)] if sizes and min(sizes) < sizes[0] else [])
        return out

    @property
    def backends_used(self) -> List[str]:
        return [b for b, ks in self.synced.items() if ks]

    def text(self) -> str:
        lines = [f"backend requested: {self.requested}; used: {', '.join(self.backends_used) or 'none'}"]
        if self.landmarks:
            lines.append(f"landmarks: {self.landmarks}")
        for b, ks in self.synced.items():
            lines.append(f"  {b}: {len(ks)} frames synced ({ranges_text(_ranges(ks))})")
        lines.append(f"frames: {self.num_frames} out, {sum(len(v) for v in self.synced.values())} synced, "
                     f"{len(self.passed_through)} passed through unchanged "
                     f"({ranges_text(_ranges(self.passed_through))})")
        if self.kept_silent:
            lines.append(f"silence: {len(self.kept_silent)} frames kept the original mouth "
                         f"({ranges_text(_ranges(self.kept_silent))})")
        for f in self.fallbacks:
            lines.append(f"fallback: {f}")
        for n in self.notes:
            lines.append(f"note: {n}")
        if self.batch_sizes:
            lines.append(f"batch size: {self.batch_sizes[0]}" + (
                f" (lowered to {min(self.batch_sizes)} after running out of memory)"
                if min(self.batch_sizes) < self.batch_sizes[0] else ""))
        lines.append(f"time: {self.seconds:.1f} s")
        return "\n".join(lines)


def _ranges(ks: Sequence[int]) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for k in sorted(ks):
        if out and out[-1][1] == k - 1:
            out[-1] = (out[-1][0], k)
        else:
            out.append((k, k))
    return out
