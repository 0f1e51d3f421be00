import numpy as np
import pytest

from fogreid.errors import FogreidError
from fogreid.metrics import cosine_distance, evaluate_rank

Q_PIDS, Q_CAMS = np.array([1, 2, 3]), np.array([0, 0, 0])
G_PIDS, G_CAMS = np.array([1, 1, 2, 3, 4]), np.array([0, 1, 1, 0, 1])
DIST = np.array([[0.1, 0.5, 0.2, 0.9, 0.3],     # nearest true match (same camera) is filtered out
                 [0.4, 0.3, 0.1, 0.2, 0.5],     # true match first
                 [0.5, 0.5, 0.5, 0.1, 0.5]])    # only match is same id + same camera: skipped


def test_map_and_cmc_by_hand():
    result = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert result.num_queries == 2
    assert result.mAP == pytest.approx((1 / 3 + 1) / 2)
    np.testing.assert_allclose(result.cmc, [0.5, 0.5, 1.0, 1.0, 1.0])
    assert result.as_dict()["rank1"] == 0.5


def test_short_gallery_pads_the_curve():
    result = evaluate_rank(DIST[:2, :3], Q_PIDS[:2], G_PIDS[:3], Q_CAMS[:2], G_CAMS[:3], max_rank=10)
    assert result.cmc.shape == (10,) and result.cmc[-1] == 1.0


def test_no_valid_query_is_an_error():
    with pytest.raises(FogreidError, match="no query has a true match"):
        evaluate_rank(DIST[2:], Q_PIDS[2:], G_PIDS, Q_CAMS[2:], G_CAMS)


def test_cosine_distance():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(cosine_distance(a, a), [[0, 1], [1, 0]], atol=1e-12)
