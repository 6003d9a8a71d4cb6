"""Faces: where the face of each frame is, and which frames are cutaways.

``detectors`` finds faces (MTCNN, S3FD), ``landmarks`` places 68 points on them (DWPose, FAN, dlib, or the 5-point
estimate), ``shots`` finds the cuts, ``tracks`` follows faces through a shot, chooses the speaker and decides the
cutaways, ``cropbox`` turns landmarks into the crop box and alignment points the generators were trained on.
"""
