"""The registry of known weight files: what they are, where they live, where to download them.

Each :class:`WeightFile` names a ComfyUI model folder type (``musetalk``, ``latentsync``...), a path inside it, and its
source. Weights live under ``ComfyUI/models/<folder>`` when running inside ComfyUI (``nodes/comfy.py`` installs a
folder resolver backed by ``folder_paths``), or under ``$MUSETALK_MODELS_DIR/<folder>`` standalone (default
``~/.cache/musetalk_enhanced/models``). Missing files are downloaded on first use with huggingface_hub when allowed;
otherwise one :class:`MissingWeightsError` lists every missing file, its source and its destination
(ComfyUI folder_paths.py). Downloading, and stopping at once when there is no network: models/download.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from . import download

ENV_MODELS_DIR = "MUSETALK_MODELS_DIR"
DEFAULT_MODELS_DIR = os.path.join(os.path.expanduser("~"), ".cache", "musetalk_enhanced", "models")
TEST_WEIGHTS_MARKER = "RANDOM_TEST_WEIGHTS.txt"


@dataclass(frozen=True)
class WeightFile:
    key: str                       # registry key, e.g. "musetalk.unet"
    folder: str                    # model folder type: "musetalk", "latentsync", ...
    relpath: str                   # path inside the folder, e.g. "musetalkV15/unet.pth"
    repo_id: Optional[str] = None  # Hugging Face repo to download from
    repo_file: Optional[str] = None  # file inside the repo (default: relpath)
    url: Optional[str] = None      # human-readable download address
    size: Optional[int] = None     # bytes, for messages and the README
    description: str = ""
    groups: tuple = field(default=())  # bundles that need this file ("musetalk", "latentsync-1.6", ...)

    @property
    def source(self) -> str:
        if self.url:
            return self.url
        if self.repo_id:
            return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.repo_file or self.relpath}"
        return "(no public source)"


REGISTRY: Dict[str, WeightFile] = {}


def register(*files: WeightFile) -> None:
    for f in files:
        REGISTRY[f.key] = f


def _mb(n: int) -> int:
    return n * 1024 * 1024


# The released files (MuseTalk download_weights.sh, LatentSync README, README.md). Engines may register more.
register(
    WeightFile("musetalk.unet", "musetalk", "musetalkV15/unet.pth", "TMElyralab/MuseTalk", "musetalkV15/unet.pth",
               size=3_400_000_000, description="MuseTalk v1.5 UNet (plain state dict)", groups=("musetalk",)),
    WeightFile("musetalk.unet_config", "musetalk", "musetalkV15/musetalk.json", "TMElyralab/MuseTalk",
               "musetalkV15/musetalk.json", size=1_000, description="MuseTalk v1.5 UNet config", groups=("musetalk",)),
    WeightFile("sd_vae.config", "musetalk", "sd-vae/config.json", "stabilityai/sd-vae-ft-mse", "config.json",
               size=600, description="sd-vae-ft-mse config", groups=("musetalk", "latentsync")),
    WeightFile("sd_vae.weights", "musetalk", "sd-vae/diffusion_pytorch_model.safetensors", "stabilityai/sd-vae-ft-mse",
               "diffusion_pytorch_model.safetensors", size=334_643_268,
               description="sd-vae-ft-mse AutoencoderKL weights", groups=("musetalk", "latentsync")),
    # Alternative to sd_vae.weights (the original MuseTalk layout): used when present, never downloaded by a bundle.
    WeightFile("sd_vae.weights_bin", "musetalk", "sd-vae/diffusion_pytorch_model.bin", "stabilityai/sd-vae-ft-mse",
               "diffusion_pytorch_model.bin", size=335_000_000,
               description="sd-vae-ft-mse AutoencoderKL weights (.bin, alternative to the .safetensors)"),
    WeightFile("whisper_tiny.config", "musetalk", "whisper/config.json", "openai/whisper-tiny", "config.json",
               size=2_000, description="whisper-tiny config (Hugging Face layout)", groups=("musetalk",)),
    WeightFile("whisper_tiny.weights", "musetalk", "whisper/model.safetensors", "openai/whisper-tiny",
               "model.safetensors", size=151_061_672, description="whisper-tiny weights (Hugging Face layout)",
               groups=("musetalk",)),
    WeightFile("face_parse.bisenet", "musetalk", "face-parse-bisent/79999_iter.pth", "TMElyralab/MuseTalk",
               "face-parse-bisent/79999_iter.pth", size=53_289_463,
               description="BiSeNet face parser (only for blend mode 'jaw')", groups=("face_parse",)),
    WeightFile("s3fd", "musetalk", "s3fd/s3fd-619a316812.pth", None, None,
               url="https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth", size=89_843_225,
               description="S3FD face detector (original MuseTalk detector)", groups=("s3fd",)),
    WeightFile("mtcnn.pnet", "musetalk", "mtcnn/pnet.pt", None, None,
               url="https://github.com/timesler/facenet-pytorch/raw/master/data/pnet.pt", size=28_570,
               description="MTCNN P-Net (also provided by `pip install --no-deps facenet-pytorch`)",
               groups=("mtcnn",)),
    WeightFile("mtcnn.rnet", "musetalk", "mtcnn/rnet.pt", None, None,
               url="https://github.com/timesler/facenet-pytorch/raw/master/data/rnet.pt", size=403_147,
               description="MTCNN R-Net (also provided by `pip install --no-deps facenet-pytorch`)",
               groups=("mtcnn",)),
    WeightFile("mtcnn.onet", "musetalk", "mtcnn/onet.pt", None, None,
               url="https://github.com/timesler/facenet-pytorch/raw/master/data/onet.pt", size=1_559_269,
               description="MTCNN O-Net (also provided by `pip install --no-deps facenet-pytorch`)",
               groups=("mtcnn",)),
    WeightFile("fan68", "musetalk", "fan/2DFAN4-11f355bf06.pth.tar", None, None,
               url="https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar", size=95_000_000,
               description="FAN 2DFAN4 68-point face landmarks (used with S3FD)", groups=("s3fd",)),
    WeightFile("latentsync15.unet", "latentsync", "1.5/latentsync_unet.pt", "ByteDance/LatentSync-1.5",
               "latentsync_unet.pt", size=5_068_000_000, description="LatentSync 1.5 UNet3D (256 px)",
               groups=("latentsync-1.5",)),
    WeightFile("latentsync16.unet", "latentsync", "1.6/latentsync_unet.pt", "ByteDance/LatentSync-1.6",
               "latentsync_unet.pt", size=5_068_000_000, description="LatentSync 1.6 UNet3D (512 px)",
               groups=("latentsync-1.6",)),
    WeightFile("latentsync.whisper_tiny", "latentsync", "whisper/tiny.pt", "ByteDance/LatentSync-1.6",
               "whisper/tiny.pt", size=75_572_083, description="whisper tiny (OpenAI format)",
               groups=("latentsync-1.5", "latentsync-1.6")),
)


class MissingWeightsError(FileNotFoundError):
    """One or more weight files are missing and could not (or may not) be downloaded."""

    def __init__(self, missing: Sequence[WeightFile], dirs: Dict[str, List[str]], reason: str = ""):
        self.missing = list(missing)
        lines = [f"Missing model weights ({len(self.missing)} file(s)){': ' + reason if reason else ''}."]
        for f in self.missing:
            dest = os.path.join(dirs.get(f.folder, ["<models>/" + f.folder])[0], f.relpath)
            size = f" (~{f.size / 1e6:.0f} MB)" if f.size else ""
            lines.append(f"  - {f.description or f.key}{size}\n      from: {f.source}\n      put it at: {dest}")
        lines.append("Enable auto_download (needs internet), run the pack's install.py, or download the files by hand "
                     "to the paths above.")
        super().__init__("\n".join(lines))


# ---- where the model folders are -----------------------------------------------------------------------------------
_resolver: Optional[Callable[[str], List[str]]] = None


def set_folder_resolver(fn: Optional[Callable[[str], List[str]]]) -> None:
    """Install a function ``folder type -> [directories]`` (first = download target). ``None`` restores the default."""
    global _resolver
    _resolver = fn


def default_models_dir() -> str:
    return os.environ.get(ENV_MODELS_DIR) or DEFAULT_MODELS_DIR


def folder_dirs(folder: str) -> List[str]:
    if _resolver is not None:
        dirs = [d for d in _resolver(folder) if d]
        if dirs:
            return dirs
    return [os.path.join(default_models_dir(), folder)]


def find(key: str) -> Optional[str]:
    """Path of the weight file ``key`` if present in any search directory, else None."""
    f = REGISTRY[key]
    for d in folder_dirs(f.folder):
        p = os.path.join(d, f.relpath)
        if os.path.isfile(p):
            return p
    return None


def is_test_weights(path: str) -> bool:
    """True when ``path`` lies in a folder written by the random test-weight tool (tests/make_test_weights.py)."""
    d = os.path.dirname(os.path.abspath(path))
    for _ in range(3):
        if os.path.isfile(os.path.join(d, TEST_WEIGHTS_MARKER)):
            return True
        d = os.path.dirname(d)
    return False


def downloads_allowed(auto_download: bool) -> bool:
    return auto_download and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False")


def _download(f: WeightFile, dest_dir: str) -> str:
    dest = os.path.join(dest_dir, f.relpath)
    if f.repo_id:
        return download.fetch_from_hub(f.repo_id, f.repo_file or f.relpath, dest)
    if f.url:
        return download.fetch(f.url, dest)
    raise FileNotFoundError(f"no download source for {f.key}")


def ensure(keys: Iterable[str], auto_download: bool = True, log: Callable[[str], None] = print) -> Dict[str, str]:
    """Return ``{key: path}`` for every key, downloading missing files when allowed.

    Raises :class:`MissingWeightsError` listing *every* file still missing (not just the first).
    """
    keys = list(keys)
    found: Dict[str, str] = {}
    missing: List[WeightFile] = []
    for k in keys:
        p = find(k)
        if p:
            found[k] = p
        else:
            missing.append(REGISTRY[k])
    dirs = {f.folder: folder_dirs(f.folder) for f in missing}
    if missing and not downloads_allowed(auto_download):
        why = "auto_download is off" if not auto_download else "HF_HUB_OFFLINE is set"
        raise MissingWeightsError(missing, dirs, why)
    still: List[WeightFile] = []
    errors: List[str] = []
    for f in missing:
        offline = download.offline_reason()
        if offline:                        # no network: nothing more is tried, one message lists every file
            still.append(f)
            continue
        try:
            log(f"[MuseTalk] downloading {f.source} -> {folder_dirs(f.folder)[0]}/{f.relpath}")
            found[f.key] = _download(f, folder_dirs(f.folder)[0])
        except Exception as exc:  # noqa: BLE001 - offline, 404, disk full...
            still.append(f)
            if not isinstance(exc, download.NoNetwork):
                errors.append(f"{f.key}: {type(exc).__name__}: {_first_line(exc)}")
    if still:
        offline = download.offline_reason()
        reasons = ([f"no network, nothing was downloaded: {offline}"] if offline else []) + errors
        raise MissingWeightsError(still, dirs, "; ".join(reasons)[:800] or "download failed")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
