"""Pictures for the README, made from real media with the real MTCNN detector and the pack's own geometry:

* docs/timeline.jpg: one thumbnail per frame of an edited clip (face shots and B-roll); green = lip-synced,
  red = cutaway passed through untouched, with the shot cuts marked.
* docs/icon.png: the 400x400 registry icon.
* docs/paste_region.jpg: what MuseTalk replaces in a face frame: detector box, crop box (bbox_shift/extra_margin),
  and the feathered lower-face blend mask; outside the mask every pixel is the source pixel.

Run: .venv/bin/python tools/make_docs_images.py
"""
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import conftest  # noqa: E402,F401  (imports the pack as musetalk_enhanced)
import mediakit as mk  # noqa: E402

from musetalk_enhanced.pipeline.backends.blending import prepare_blend_mask  # noqa: E402
from musetalk_enhanced.pipeline.faces.detectors import create_detector  # noqa: E402
from musetalk_enhanced.pipeline.faces.tracks import analyze_faces  # noqa: E402
from musetalk_enhanced.pipeline.media.frames import ArrayFrames  # noqa: E402
from musetalk_enhanced.pipeline.runtime import Runtime  # noqa: E402


def main():
    out_dir = os.path.join(ROOT, "docs")
    os.makedirs(out_dir, exist_ok=True)
    plan = (("astronaut", 8), ("rocket", 4), ("astronaut", 6), ("coffee", 4), ("chelsea", 4), ("astronaut", 6))
    clip = mk.edited_clip((256, 256), plan)
    rt = Runtime("cpu", show_progress=False)
    faces = analyze_faces(ArrayFrames(clip, 25.0), create_detector("mtcnn", rt), rt, min_face_size=30)
    # timeline
    tw = 96
    cols = 16
    rows = -(-len(clip) // cols)
    sheet = np.full((rows * (tw + 26) + 40, cols * (tw + 4) + 4, 3), 255, np.uint8)
    cv2.putText(sheet, "Every frame of an edited clip: green = lip-synced face, red = cutaway passed through "
                "bit-identical", (6, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    for i, f in enumerate(faces.frames):
        r, c = divmod(i, cols)
        y, x = 40 + r * (tw + 26), 4 + c * (tw + 4)
        th = cv2.resize(clip[i], (tw, tw), interpolation=cv2.INTER_AREA)
        color = (0, 170, 0) if f.face is not None else (220, 30, 30)
        if f.face is not None:
            s = tw / 256.0
            x1, y1, x2, y2 = (int(v * s) for v in f.face.crop_box)
            cv2.rectangle(th, (x1, y1), (x2, y2), (0, 255, 255), 1)
        th[:4], th[-4:], th[:, :4], th[:, -4:] = color, color, color, color
        sheet[y:y + tw, x:x + tw] = th
        label = f"{i}" + (" cut" if i in faces.shot_starts and i > 0 else "")
        cv2.putText(sheet, label, (x + 2, y + tw + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (40, 40, 40), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "timeline.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    # paste region on a larger frame
    img = mk.photo("astronaut", (512, 512))
    f2 = analyze_faces(ArrayFrames(img[None], 25.0), create_detector("mtcnn", rt), rt, debounce_frames=1)
    face = f2.frames[0].face
    bm = prepare_blend_mask(img, face.crop_box, "feather")
    vis = img.copy()
    x0, y0, x1, y1 = bm.crop_box
    alpha = np.zeros(img.shape[:2], np.float32)
    ys, xs = max(0, y0), max(0, x0)
    alpha[ys:min(512, y1), xs:min(512, x1)] = bm.mask[ys - y0:min(512, y1) - y0, xs - x0:min(512, x1) - x0] / 255.0
    tint = np.array([255, 0, 200], np.float32)
    vis = (vis * (1 - 0.55 * alpha[..., None]) + tint * 0.55 * alpha[..., None]).astype(np.uint8)
    bx = [int(v) for v in face.detection.box]
    cv2.rectangle(vis, (bx[0], bx[1]), (bx[2], bx[3]), (0, 220, 0), 2)
    cb = face.crop_box
    cv2.rectangle(vis, (cb[0], cb[1]), (cb[2], cb[3]), (0, 200, 255), 2)
    for (x, y) in face.detection.landmarks:
        cv2.circle(vis, (int(x), int(y)), 3, (255, 255, 0), -1)
    crop = cv2.resize(vis[max(0, cb[1] - 60):cb[3] + 40, max(0, cb[0] - 60):cb[2] + 60], (360, 400))
    panel = np.full((430, 900, 3), 255, np.uint8)
    panel[10:410, 10:370] = crop
    lines = ["green: detected face (MTCNN, real weights)", "cyan: MuseTalk v1.5 crop box (256x256 to the UNet)",
             "magenta: feathered lower-face blend mask", "", "Only pixels under the mask can change;",
             "everything else in a face frame, and every", "pixel of a cutaway frame, is the source pixel."]
    for i, t in enumerate(lines):
        cv2.putText(panel, t, (390, 60 + 34 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.62, (30, 30, 30), 1, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "paste_region.jpg"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    # the registry icon (pyproject [tool.comfy] Icon): 400x400
    icon = cv2.resize(mk.photo("astronaut")[0:300, 120:420], (400, 400), interpolation=cv2.INTER_AREA)
    ov = icon.copy()
    for x in range(0, 400, 6):
        h = int(40 * abs(np.sin(x / 23.0)) + 10)
        cv2.line(ov, (x, 360 - h), (x, 360 + h), (255, 80, 200), 4)
    icon = cv2.addWeighted(ov, 0.55, icon, 0.45, 0)
    cv2.putText(icon, "MuseTalk", (18, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.6, (255, 255, 255), 4, cv2.LINE_AA)
    cv2.putText(icon, "Enhanced", (18, 110), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.imwrite(os.path.join(out_dir, "icon.png"), cv2.cvtColor(icon, cv2.COLOR_RGB2BGR))
    print("wrote docs/timeline.jpg, docs/paste_region.jpg, docs/icon.png")


if __name__ == "__main__":
    main()
