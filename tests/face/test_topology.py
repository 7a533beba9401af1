import itertools

from engine.face import topology as T


def _edges(contour):
    return {frozenset(e) for e in zip(contour, contour[1:], strict=False)}


def test_contours_match_mediapipe_connections():
    from mediapipe.python.solutions import face_mesh_connections as c

    def conn(s):
        return {frozenset(e) for e in s}

    lips = _edges(T.LIPS_OUTER_UPPER) | _edges(T.LIPS_OUTER_LOWER) | _edges(T.LIPS_INNER_UPPER) | _edges(
        T.LIPS_INNER_LOWER)
    assert lips == conn(c.FACEMESH_LIPS)
    assert _edges(T.EYE_L_UPPER) | _edges(T.EYE_L_LOWER) == conn(c.FACEMESH_LEFT_EYE)
    assert _edges(T.EYE_R_UPPER) | _edges(T.EYE_R_LOWER) == conn(c.FACEMESH_RIGHT_EYE)
    assert _edges(T.BROW_L_UPPER) | _edges(T.BROW_L_LOWER) == conn(c.FACEMESH_LEFT_EYEBROW)
    assert _edges(T.BROW_R_UPPER) | _edges(T.BROW_R_LOWER) == conn(c.FACEMESH_RIGHT_EYEBROW)
    assert _edges(T.FACE_OVAL + T.FACE_OVAL[:1]) == conn(c.FACEMESH_FACE_OVAL)
    iris = set(itertools.chain.from_iterable(c.FACEMESH_LEFT_IRIS))
    assert iris == set(T.IRIS_L[1:])


def test_polygons_are_closed_rings_without_repeats():
    mouth = T.inner_mouth_polygon()
    assert len(mouth) == len(set(mouth)) == 20
    assert len(T.eye_polygon("L")) == len(set(T.eye_polygon("L"))) == 16
