"""Oracles for ``models/conditional_oracle.py`` (issue 27, mutation testing): per example, a batch of
mixed labels gets its own class's exact reverse step, score and velocity (the closed forms of one
Gaussian: q(x_t | c) = N(alpha mu_c, alpha^2 v_c + sigma^2)), the null class K the whole mixture's;
the respaced oracle; the label refusals; the class posterior by Bayes' rule by hand."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.paths import VPPath
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.conditional_oracle import LabelledFlowMixtureOracle, LabelledMixtureOracle, class_posterior
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle

WEIGHTS, MEANS, VARS = (0.2, 0.5, 0.3), (-2.0, 1.0, 3.0), (0.3, 1.5, 0.2)
DIST = GaussianMixture(list(WEIGHTS), [[m] for m in MEANS], list(VARS))
LABELS = torch.tensor([2, 0, 3, 1, 0, 2, 3, 1])  # 3: the null class
X = torch.linspace(-3, 4, 8, dtype=torch.float64)[:, None]


@pytest.fixture(scope="module")
def ddpm():
    return LabelledMixtureOracle(DIST, make_schedule("linear", 40, beta_start=1e-3, beta_end=0.1))


def _gaussian_posterior_mean(x, a, s, mu, v):
    """E[x_0 | x_t = x] for x_0 ~ N(mu, v), x_t = a x_0 + s eps (one Gaussian, by hand)."""
    return mu + a * v * (x - a * mu) / (a * a * v + s * s)


def test_mixed_labels_get_their_class_reverse_step(ddpm):
    sched = ddpm.schedule
    t = torch.tensor([3, 40, 17, 1, 25, 9, 33, 12])
    p = ddpm.p_mean_variance(X, t, LABELS)
    for i, c in enumerate(LABELS.tolist()):
        ref = (MixtureOracle(DIST, sched) if c == 3 else MixtureOracle(DIST.component(c), sched)).p_mean_variance(
            X[i:i + 1], t[i:i + 1])
        for got, want in zip(p, ref):
            torch.testing.assert_close(got[i:i + 1], want, rtol=1e-12, atol=1e-12)
        if c < 3:  # the class's x_0 prediction in closed form
            ab = float(sched.alphas_cumprod[t[i]])
            expect = _gaussian_posterior_mean(float(X[i]), math.sqrt(ab), math.sqrt(1 - ab), MEANS[c], VARS[c])
            assert float(p.pred_x0[i]) == pytest.approx(expect, rel=1e-9)
    one = ddpm.p_mean_variance(X, torch.tensor(17), torch.tensor(1))
    torch.testing.assert_close(one.mean, MixtureOracle(DIST.component(1), sched).p_mean_variance(
        X, torch.full((8,), 17)).mean, rtol=1e-12, atol=1e-12)
    two = torch.tensor([0, 1] * 4)  # two groups: each its own class, not the first group's
    both = ddpm.p_mean_variance(X, t, two)
    for c in (0, 1):
        ref = MixtureOracle(DIST.component(c), sched).p_mean_variance(X[two == c], t[two == c])
        torch.testing.assert_close(both.mean[two == c], ref.mean, rtol=1e-12, atol=1e-12)
    none = ddpm.p_mean_variance(X, torch.full((8,), 17))
    torch.testing.assert_close(none.mean, MixtureOracle(DIST, sched).p_mean_variance(X, torch.full((8,), 17)).mean)


def test_mixed_labels_get_their_class_score(ddpm):
    abar = 0.37
    got = ddpm.score(X, 12.5, abar, LABELS)
    full = MixtureOracle(DIST, ddpm.schedule).score(X, 12.5, abar)
    for i, c in enumerate(LABELS.tolist()):
        expect = float(full[i]) if c == 3 else -(float(X[i]) - math.sqrt(abar) * MEANS[c]) / (abar * VARS[c] + 1 - abar)
        assert float(got[i]) == pytest.approx(expect, rel=1e-10)
    torch.testing.assert_close(ddpm.score(X, 12.5, abar), full)


def test_mixed_labels_get_their_class_velocity():
    flow = LabelledFlowMixtureOracle(DIST)
    t = 0.35
    a, s = 1 - t, t
    got = flow.velocity(X, t, LABELS)
    full = FlowMixtureOracle(DIST).velocity(X, t)
    for i, c in enumerate(LABELS.tolist()):
        if c == 3:
            expect = float(full[i])
        else:  # v = -E[x_0 | x] + E[eps | x] on the linear path, E[eps | x] = (x - a E[x_0 | x]) / s
            x0 = _gaussian_posterior_mean(float(X[i]), a, s, MEANS[c], VARS[c])
            expect = -x0 + (float(X[i]) - a * x0) / s
        assert float(got[i]) == pytest.approx(expect, rel=1e-10)
    torch.testing.assert_close(flow.velocity(X, t), full)
    torch.testing.assert_close(flow.velocity(X, t, torch.tensor(0)),
                               FlowMixtureOracle(DIST.component(0)).velocity(X, t))
    assert flow.path is flow.unconditional.path and flow.num_classes == 3 and flow.oracle(3) is flow.unconditional


def test_respaced_keeps_the_mixture_on_the_spaced_schedule(ddpm):
    assert ddpm.respaced(40) is ddpm
    r = ddpm.respaced(10)
    assert r.schedule.T == 10 and r.dist is ddpm.dist and r.data_shape == ddpm.data_shape
    torch.testing.assert_close(r.schedule.alphas_cumprod, ddpm.schedule.spaced(10).alphas_cumprod)
    t = torch.full((8,), 4)
    torch.testing.assert_close(r.p_mean_variance(X, t, LABELS).mean,
                               LabelledMixtureOracle(DIST, ddpm.schedule.spaced(10)).p_mean_variance(X, t, LABELS).mean)


RANGE = r"class labels must be in 0..2 \(or 3, the null class\), got "


@pytest.mark.parametrize("cond, needle", [(torch.tensor([0, 1]), "cond has 2 labels for 8 examples"),
                                          (torch.tensor(-1), RANGE + r"\[-1\]"), (torch.tensor(4), RANGE + r"\[4\]")])
def test_bad_labels_are_refused(ddpm, cond, needle):
    with pytest.raises(DDPMLabError, match=needle):
        ddpm.score(X, 3.0, 0.5, cond)


def test_the_class_posterior_is_bayes_rule_by_hand():
    x = torch.tensor([[-1.0], [0.5], [2.5]], dtype=torch.float64)
    for i in range(3):
        dens = [w * math.exp(-(float(x[i]) - m) ** 2 / (2 * v)) / math.sqrt(2 * math.pi * v)
                for w, m, v in zip(WEIGHTS, MEANS, VARS)]
        expect = [d / sum(dens) for d in dens]
        assert class_posterior(DIST, x)[i].tolist() == pytest.approx(expect, rel=1e-10)


def test_the_data_shape_and_the_path_reach_every_class():
    dist = GaussianMixture([0.5, 0.5], [[-1.0, 0.5], [1.0, -0.5]], [0.3, 0.6])
    sched = make_schedule("linear", 20)
    lab = LabelledMixtureOracle(dist, sched, data_shape=(1, 2))
    assert all(o.data_shape == (1, 2) for o in [lab.unconditional, *lab.components])
    assert all(o.data_shape == (1, 2) for o in [lab.respaced(5).unconditional, *lab.respaced(5).components])
    x = torch.randn(4, 1, 2, generator=gen(0), dtype=torch.float64)
    p = lab.p_mean_variance(x, torch.full((4,), 7), torch.tensor([0, 1, 2, 0]))
    assert p.mean.shape == (4, 1, 2)
    path = VPPath(ContinuousSchedule(sched))
    flow = LabelledFlowMixtureOracle(dist, path, data_shape=(1, 2))
    assert flow.path is path and all(o.path is path and o.data_shape == (1, 2) for o in flow.components)
    got = flow.velocity(x, 0.4, torch.tensor([1, 0, 1, 2]))
    one = FlowMixtureOracle(dist.component(1), path).velocity(x[0].reshape(1, 2), 0.4)
    torch.testing.assert_close(got[0], one[0:1])
    torch.testing.assert_close(got[3], FlowMixtureOracle(dist, path).velocity(x[3].reshape(1, 2), 0.4)[0:1])


def test_the_class_posterior_of_two_dimensional_data_row_by_row():
    dist = GaussianMixture([0.5, 0.5], [[-1.0, 0.5], [1.0, -0.5]], [0.3, 0.6])
    x = torch.tensor([[-1.0, 0.4], [0.9, -0.6], [0.0, 3.0]], dtype=torch.float64)
    got = class_posterior(dist, x)
    for i in range(3):
        torch.testing.assert_close(got[i], dist.responsibilities(x[i:i + 1])[0])
    assert got.shape == (3, 2)
