"""Optional pre-download of model weights (ComfyUI-Manager runs this after installing requirements.txt).

Never needed: the nodes download what they need on first use (or tell you exactly which file is missing and where it
goes). Idempotent (present files are skipped) and safe offline (a failed download is reported, the exit code stays 0).

    python install.py                      # MuseTalk v1.5 bundle + MTCNN face detector
    python install.py --latentsync 1.6     # + LatentSync 1.6 (UNet, whisper tiny.pt, mask)
    python install.py --face-parser --s3fd # optional extras
    python install.py --list               # show what is present / missing, download nothing
Set MUSETALK_SKIP_DOWNLOAD=1 to make the Manager-run install a no-op.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))


def _load_pack():
    """The pack as the package ``musetalk_enhanced`` (bootstrap.py, the one import helper)."""
    import runpy

    return runpy.run_path(os.path.join(ROOT, "bootstrap.py"))["import_pack"]()


def _comfy_models_dir():
    """``ComfyUI/models`` when this folder sits in ``ComfyUI/custom_nodes/``."""
    comfy = os.path.dirname(os.path.dirname(ROOT))
    if os.path.isfile(os.path.join(comfy, "folder_paths.py")) and os.path.isdir(os.path.join(comfy, "models")):
        return os.path.join(comfy, "models")
    return None


BUNDLES = {
    "musetalk": ["musetalk.unet", "musetalk.unet_config", "sd_vae.config", "sd_vae.weights", "whisper_tiny.config",
                 "whisper_tiny.weights", "mtcnn.pnet", "mtcnn.rnet", "mtcnn.onet"],
    "latentsync-1.5": ["latentsync15.unet", "latentsync.whisper_tiny", "latentsync.mask", "sd_vae.config",
                       "sd_vae.weights"],
    "latentsync-1.6": ["latentsync16.unet", "latentsync.whisper_tiny", "latentsync.mask", "sd_vae.config",
                       "sd_vae.weights"],
    "face-parser": ["face_parse.bisenet"],
    "s3fd": ["s3fd", "fan68"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latentsync", choices=["1.5", "1.6"], action="append", default=[])
    p.add_argument("--face-parser", action="store_true", help="BiSeNet for blend modes jaw/raw/neck")
    p.add_argument("--s3fd", action="store_true", help="S3FD + FAN for the s3fd+fan68 detector")
    p.add_argument("--no-musetalk", action="store_true")
    p.add_argument("--models-dir", help="models root (default: ComfyUI/models or $MUSETALK_MODELS_DIR)")
    p.add_argument("--list", action="store_true", help="only show what is present and missing")
    args = p.parse_args(argv)
    if os.environ.get("MUSETALK_SKIP_DOWNLOAD") == "1" and not args.list:
        print("[MuseTalk] MUSETALK_SKIP_DOWNLOAD=1: skipping the weight pre-download")
        return 0
    root = args.models_dir or _comfy_models_dir()
    if root:
        os.environ["MUSETALK_MODELS_DIR"] = os.path.abspath(root)
    try:
        _load_pack()
        from musetalk_enhanced.models import latentsync_unet3d  # noqa: F401  (registers the mask asset)
        from musetalk_enhanced.models import registry
    except Exception as exc:  # requirements not installed yet: never break an install
        print(f"[MuseTalk] cannot import the pack yet ({type(exc).__name__}: {exc}); skipping the pre-download")
        return 0
    keys = [] if args.no_musetalk else list(BUNDLES["musetalk"])
    for v in args.latentsync:
        keys += BUNDLES[f"latentsync-{v}"]
    if args.face_parser:
        keys += BUNDLES["face-parser"]
    if args.s3fd:
        keys += BUNDLES["s3fd"]
    keys = list(dict.fromkeys(keys))
    print(f"[MuseTalk] models root: {registry.default_models_dir()}")
    missing = []
    for k in keys:
        path = registry.find(k)
        f = registry.REGISTRY[k]
        print(f"  {'ok     ' if path else 'missing'} {f.folder}/{f.relpath}  ({f.description})")
        if not path:
            missing.append(k)
    if args.list or not missing:
        return 0
    try:
        registry.ensure(missing, auto_download=True)
        print("[MuseTalk] all requested weights are present")
    except registry.MissingWeightsError as exc:
        print(f"[MuseTalk] {exc}")
        print("[MuseTalk] the nodes will try again on first use")
    except Exception as exc:  # offline, disk full... never fail the install
        print(f"[MuseTalk] pre-download failed ({type(exc).__name__}: {exc}); the nodes will try again on first use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
