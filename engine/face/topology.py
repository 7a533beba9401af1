"""Index sets of the 478-point face mesh (MediaPipe's topology), as ordered contours.

"Left"/"right" are the subject's own (ARKit convention): the subject's left eye appears on the
image's right side in a frontal portrait. Contours run from the subject's right to left.
tests/face/test_topology.py checks these against MediaPipe's own connection sets.
"""

N_LANDMARKS = 478

LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNER_R, MOUTH_CORNER_L = 61, 291
INNER_CORNER_R, INNER_CORNER_L = 78, 308

EYE_R_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
EYE_R_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
EYE_L_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
EYE_L_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)

BROW_R_UPPER = (70, 63, 105, 66, 107)
BROW_R_LOWER = (46, 53, 52, 65, 55)
BROW_L_UPPER = (336, 296, 334, 293, 300)
BROW_L_LOWER = (285, 295, 282, 283, 276)

IRIS_R = (468, 469, 470, 471, 472)  # centre first
IRIS_L = (473, 474, 475, 476, 477)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
CHIN = 152
NOSE_TIP = 1
FOREHEAD = 10


def inner_mouth_polygon() -> tuple[int, ...]:
    """Closed inner-lip contour: upper lip right->left, then lower lip left->right."""
    return LIPS_INNER_UPPER + tuple(reversed(LIPS_INNER_LOWER[1:-1]))


def eye_polygon(side: str) -> tuple[int, ...]:
    upper, lower = (EYE_L_UPPER, EYE_L_LOWER) if side == "L" else (EYE_R_UPPER, EYE_R_LOWER)
    return upper + tuple(reversed(lower[1:-1]))
