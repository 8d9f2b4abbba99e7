"""GLISTER-ONLINE: the vectorized gains, the greedy against a slow reference, and the selector's contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from glister_train.data import ImageData
from glister_train.models import TinyNet
from glister_train.selection.base import Environment
from glister_train.selection.glister import GlisterOptions, GlisterSelector, LastLayerProblem, greedy
from glister_train.selection.quotas import budget_quotas


def glister(lr: float = 0.1, batch_size: int = 64, precision: str = "fp32", **options) -> GlisterSelector:
    """The selector with these options, for images normalized as 0.5 +- 0.25."""
    env = Environment(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), lr=lr, batch_size=batch_size,
                      precision=precision)
    return GlisterSelector(GlisterOptions(**options), env)


def clusters(n: int, classes: int = 4, dim: int = 6, noise: float = 0.0, seed: int = 0, draw: int = 0):
    """Gaussian class clusters (centres from ``seed``, points from ``draw``); a share ``noise`` of labels flipped."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed)) * 2
    g = torch.Generator().manual_seed(1000 + draw)
    y = torch.arange(n) % classes
    h = centres[y] + torch.randn(n, dim, generator=g)
    flipped = torch.rand(n, generator=g) < noise
    y_seen = torch.where(flipped, (y + 1 + torch.randint(0, classes - 1, (n,), generator=g)) % classes, y)
    return h, y_seen, flipped


def make_problem(n=40, v=30, classes=4, dim=6, eta=0.1, full=True, mean_step=False, per_class=False, noise=0.0,
                 seed=0, trained=False):
    h, y, flipped = clusters(n, classes, dim, noise, seed, draw=1)
    hv, yv, _ = clusters(v, classes, dim, 0.0, seed, draw=2)
    g = torch.Generator().manual_seed(seed + 7)
    w, b = torch.randn(classes, dim, generator=g) * 0.3, torch.randn(classes, generator=g) * 0.1
    if trained:  # a partly trained model: a few steps of gradient descent on clean data
        w, b = w.requires_grad_(), b.requires_grad_()
        xs, ys, _ = clusters(200, classes, dim, 0.0, seed, draw=3)
        opt = torch.optim.SGD([w, b], lr=0.1)
        for _ in range(30):
            opt.zero_grad()
            F.cross_entropy(xs @ w.T + b, ys).backward()
            opt.step()
        w, b = w.detach(), b.detach()
    z = h @ w.T + b
    r = torch.softmax(z, 1)
    r[torch.arange(n), y] -= 1
    groups = y if per_class else torch.zeros_like(y)
    problem = LastLayerProblem(h, r, groups, hv, hv @ w.T + b, yv, eta, full, mean_step)
    return problem, (h, y, hv, yv, w, b, flipped)


def per_example_grads(h, y, w, b, full):
    """Explicit last-layer gradients of each example's cross-entropy, by autograd, one at a time."""
    grads = []
    for i in range(len(y)):
        wi, bi = w.clone().requires_grad_(), b.clone().requires_grad_()
        F.cross_entropy((h[i] @ wi.T + bi)[None], y[i : i + 1]).backward()
        grads.append(torch.cat([wi.grad.flatten(), bi.grad]) if full else bi.grad.clone())
    return torch.stack(grads)


def val_grad(hv, yv, w, b, full):
    wi, bi = w.clone().requires_grad_(), b.clone().requires_grad_()
    F.cross_entropy(hv @ wi.T + bi, yv, reduction="sum").backward()
    return torch.cat([wi.grad.flatten(), bi.grad]) if full else bi.grad


@pytest.mark.parametrize("full", [True, False])
def test_vectorized_gains_equal_eta_times_gradient_inner_products(full):
    problem, (h, y, hv, yv, w, b, _) = make_problem(full=full)
    gi = per_example_grads(h, y, w, b, full)
    gv = val_grad(hv, yv, w, b, full)
    gw, gb = problem.val_gradient(problem.zv.clone())
    assert torch.allclose(problem.gains(gw, gb), problem.eta * gi @ gv, atol=1e-5)


def reference_greedy(h, y, hv, yv, w, b, eta, budget, full, mean_step, quotas=None):
    """Slow and obviously correct: explicit gradients, a Python loop over candidates, sets."""
    gi = per_example_grads(h, y, w, b, full)
    chosen, left = [], dict(enumerate(quotas.tolist())) if quotas is not None else None
    while len(chosen) < budget:
        step = gi[chosen].sum(0) if chosen else torch.zeros(gi.shape[1])
        if mean_step and chosen:
            step = step / len(chosen)
        if full:
            w_s = w - eta * step[: w.numel()].view_as(w)
            b_s = b - eta * step[w.numel() :]
        else:
            w_s, b_s = w, b - eta * step
        gv = val_grad(hv, yv, w_s, b_s, full)
        best, best_gain = None, -math.inf
        for i in range(len(y)):
            if i in set(chosen) or (left is not None and left[int(y[i])] == 0):
                continue
            gain = float(eta * gi[i] @ gv)
            if gain > best_gain:
                best, best_gain = i, gain
        chosen.append(best)
        if left is not None:
            left[int(y[best])] -= 1
    return chosen


@pytest.mark.parametrize("full, mean_step, per_class", [
    (True, False, False), (False, False, False), (True, True, False), (True, False, True)])
def test_naive_greedy_matches_the_reference_index_for_index(full, mean_step, per_class):
    problem, (h, y, hv, yv, w, b, _) = make_problem(full=full, mean_step=mean_step, per_class=per_class)
    budget = 12
    quotas = budget_quotas(problem.groups, budget, 4 if per_class else 1)
    ours = greedy(problem, budget, quotas, mode="naive").tolist()
    assert ours == reference_greedy(h, y, hv, yv, w, b, problem.eta, budget, full, mean_step,
                                    quotas if per_class else None)


def test_objective_is_exact_val_log_likelihood_after_the_step():
    problem, (h, y, hv, yv, w, b, _) = make_problem()
    chosen = torch.tensor([3, 5, 8])
    gi = per_example_grads(h, y, w, b, True)[chosen].sum(0)
    w_s, b_s = w - problem.eta * gi[: w.numel()].view_as(w), b - problem.eta * gi[w.numel() :]
    expected = float(torch.log_softmax(hv @ w_s.T + b_s, 1)[torch.arange(len(yv)), yv].mean())
    assert problem.objective(chosen) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
@pytest.mark.parametrize("mean_step", [True, False])
def test_glister_beats_random_and_avoids_noisy_labels(mode, mean_step):
    """30% of the pool has wrong labels: the chosen subset must score above every random subset, and hold
    fewer wrong labels than the pool (at most half as many with the mean lookahead, which keeps the
    Taylor expansion valid; the sum lookahead overshoots and then picks examples that undo the step)."""
    problem, (*_, flipped) = make_problem(n=400, v=200, noise=0.3, eta=0.05 if mean_step else 0.01,
                                          mean_step=mean_step, trained=True)
    budget = 100
    chosen = greedy(problem, budget, torch.tensor([budget]), mode=mode, block=5,
                    generator=torch.Generator().manual_seed(0))
    assert len(chosen) == budget and len(set(chosen.tolist())) == budget
    base_rate = float(flipped.float().mean())
    assert base_rate > 0.25
    assert float(flipped[chosen].float().mean()) < (base_rate / 2 if mean_step else base_rate)
    g = torch.Generator().manual_seed(1)
    randoms = [problem.objective(torch.randperm(400, generator=g)[:budget]) for _ in range(20)]
    assert problem.objective(chosen) > max(randoms)


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_per_class_budgets_are_exact_even_for_small_classes(mode):
    h, y, _ = clusters(103, classes=4)
    y[:3] = 3
    y[y == 3] = torch.tensor([0, 1, 2])[torch.arange(int((y == 3).sum())) % 3]  # class 3 empty ...
    y[0] = 3  # ... but for one example
    problem, _ = make_problem(n=103)
    problem.groups = y
    quotas = budget_quotas(y, 30, 4)
    assert int(quotas.sum()) == 30 and int(quotas[3]) <= 1
    chosen = greedy(problem, 30, quotas, mode=mode, block=7, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(y[chosen], minlength=4).tolist() == quotas.tolist()


def test_quotas_never_exceed_a_class():
    groups = torch.tensor([0] * 3 + [1] * 97)
    for budget in (1, 10, 50, 99, 100):
        q = budget_quotas(groups, budget, 3)
        assert int(q.sum()) == budget and int(q[0]) <= 3 and int(q[2]) == 0


def image_data(n, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % classes)


@pytest.mark.parametrize("greedy_mode", ["naive", "stochastic", "batched"])
@pytest.mark.parametrize("budget", [1, 17, 60])
def test_selector_contract_and_stats(greedy_mode, budget):
    train, val = image_data(60), image_data(24, seed=1)
    model = TinyNet(4, 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    sel = glister(greedy=greedy_mode)
    a = sel.select(model, train, val, budget, generator=torch.Generator().manual_seed(3))
    b = sel.select(model, train, val, budget, generator=torch.Generator().manual_seed(3))
    assert len(a) == budget and len(torch.unique(a.indices)) == budget and torch.equal(a.indices, b.indices)
    assert bool((a.weights == 1).all())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    for key in ("select_forward_time", "select_greedy_time", "select_objective", "select_objective_random"):
        assert math.isfinite(a.stats[key])
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, budget, 4).tolist()


def test_a_class_absent_from_the_pool():
    train = ImageData(image_data(50).x, torch.arange(50) % 3)  # the model has 4 classes; class 3 is absent
    out = glister().select(TinyNet(4, 4), train, image_data(12, seed=2), 20, generator=torch.Generator().manual_seed(0))
    assert len(out) == 20 and len(torch.unique(out.indices)) == 20


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_non_finite_gains_raise_instead_of_looping(mode):
    """NaN in the problem (a diverged model) must raise at once: an empty pick never ends the greedy."""
    from glister_train.errors import NonFiniteSelection

    problem, _ = make_problem(n=200, v=50)
    problem.h[:] = float("nan")
    with pytest.raises(NonFiniteSelection, match="non-finite candidate features"):
        greedy(problem, 50, torch.tensor([50]), mode=mode, block=5, generator=torch.Generator().manual_seed(0))


def test_selector_refuses_nan_features():
    from glister_train.errors import NonFiniteSelection

    model = TinyNet(4, 4)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteSelection, match="non-finite candidate features"):
        glister().select(model, image_data(60), image_data(24, seed=1), 20, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_an_overflowing_lookahead_raises(mode):
    """Finite inputs whose lookahead step overflows to inf: the gains turn NaN mid-greedy."""
    from glister_train.errors import NonFiniteSelection

    problem, _ = make_problem(n=200, v=50, eta=1e38)
    with pytest.raises(NonFiniteSelection, match="no finite gain"):
        greedy(problem, 50, torch.tensor([50]), mode=mode, block=5, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- sampling from the gains


def test_draw_is_exact_seeded_and_follows_the_temperature():
    from glister_train.selection.sampling import draw, sampling_keys

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2000, generator=g)
    groups = torch.arange(2000) % 4
    quotas = budget_quotas(groups, 300, 4)
    for t in (0.05, 1.0, 1e6, math.inf):
        keys = sampling_keys(scores, groups, 4, t)
        a = draw(keys, groups, quotas, torch.Generator().manual_seed(1))
        b = draw(keys, groups, quotas, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and len(torch.unique(a)) == 300
        assert torch.bincount(groups[a], minlength=4).tolist() == quotas.tolist()
    hot = draw(sampling_keys(scores, groups, 4, 1e6), groups, quotas, torch.Generator().manual_seed(2))
    cold = draw(sampling_keys(scores, groups, 4, 0.01), groups, quotas, torch.Generator().manual_seed(2))
    topk = set(top_within_quotas_ref(scores, groups, quotas))
    assert len(topk & set(cold.tolist())) >= 290  # a low temperature is nearly the per-class top-k
    assert abs(float(scores[hot].mean())) < 0.15  # a high one nearly uniform
    uniform = sampling_keys(scores, groups, 4, math.inf)
    assert torch.equal(uniform, torch.zeros_like(uniform))  # inf: every kept candidate alike


def top_within_quotas_ref(scores, groups, quotas):
    out = []
    for c, q in enumerate(quotas.tolist()):
        members = (groups == c).nonzero().squeeze(1)
        out += members[torch.argsort(scores[members], descending=True)[:q]].tolist()
    return out


@pytest.mark.parametrize("options", [{}, {"temperature": 0.5}, {"val_gradient": "own_class"}])
def test_soft_sampling_selector_contract(options):
    train, val = image_data(60), image_data(24, seed=1)
    model = TinyNet(4, 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    sel = glister(sampling="soft", **options)
    a = sel.select(model, train, val, 17, generator=torch.Generator().manual_seed(3))
    b = sel.select(model, train, val, 17, generator=torch.Generator().manual_seed(3))
    assert len(a) == 17 and len(torch.unique(a.indices)) == 17 and torch.equal(a.indices, b.indices)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 17, 4).tolist()
    again = sel.redraw(a.cache, train, 17, generator=torch.Generator().manual_seed(4))
    assert len(torch.unique(again.indices)) == 17
    assert torch.bincount(train.y[again.indices], minlength=4).tolist() == budget_quotas(train.y, 17, 4).tolist()
    assert sel.redraws


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_backend_keeps_the_ranking(precision):
    """The selection forward through OpenVINO chooses (nearly) the eager fp32 subset, with the same objective."""
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    train, val = image_data(400), image_data(100, seed=1)
    model = TinyNet(4, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = (train.x.float() / 255 - 0.5) / 0.25
    for _ in range(20):  # a partly trained model: gains that rank something
        opt.zero_grad()
        F.cross_entropy(model(x), train.y).backward()
        opt.step()
    eager = glister(lr=0.05, precision="fp32").select(model, train, val, 120, generator=torch.Generator().manual_seed(0))
    ov_sel = glister(lr=0.05, precision=precision, backend="openvino")
    fast = ov_sel.select(model, train, val, 120, generator=torch.Generator().manual_seed(0))
    overlap = len(set(eager.indices.tolist()) & set(fast.indices.tolist())) / 120
    assert overlap >= (0.99 if precision == "fp32" else 0.95), overlap
    assert fast.stats["select_objective"] == pytest.approx(eager.stats["select_objective"], rel=0.01)
    assert fast.stats["select_backend_build_time"] > 0


@pytest.mark.parametrize("own_class", [False, True])
def test_first_order_gains_equal_explicit_gradient_inner_products(own_class):
    from glister_train.selection.glister import first_order_gains, val_residuals

    problem, (h, y, hv, yv, w, b, _) = make_problem(n=30, v=20)
    gi = per_example_grads(h, y, w, b, True)
    gv = per_example_grads(hv, yv, w, b, True)
    expected = torch.stack([0.1 * sum((gi[i] @ gv[v]) for v in range(len(yv)) if not own_class or yv[v] == y[i])
                            for i in range(len(y))])
    got = first_order_gains(h, problem.r, y, hv, val_residuals(problem.zv, yv), yv, eta=0.1, full=True,
                            own_class=own_class)
    assert torch.allclose(got, expected, atol=1e-4)


def _greedy_on(device: str, mode: str) -> torch.Tensor:
    problem, _ = make_problem(n=200, per_class=True, seed=3)
    quotas = budget_quotas(problem.groups, 50, 4)
    return greedy(problem.to(device), 50, quotas, mode=mode, block=5, generator=torch.Generator().manual_seed(0)).cpu()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_greedy_on_a_gpu_picks_what_the_cpu_picks(mode):
    cpu, gpu = _greedy_on("cpu", mode), _greedy_on("cuda", mode)
    assert len(set(cpu.tolist()) & set(gpu.tolist())) >= 0.98 * len(cpu)  # float sums may break a near tie

