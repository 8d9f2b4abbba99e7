"""GLISTER-ONLINE: the vectorized gains, the greedy against a slow reference, and the selector's contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from glister_train.data import ImageData
from glister_train.models import TinyNet
from glister_train.selection.glister import GlisterSelector, LastLayerProblem, budget_quotas, curriculum_drop, greedy
from glister_train.selection.quotas import class_demand
from glister_train.selection.sampling import draw as draw_uniform
from glister_train.selection.sampling import draw_hard_boosted, draw_least_seen


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
    sel = GlisterSelector(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, greedy=greedy_mode)
    a = sel.select(model, train, val, budget, generator=torch.Generator().manual_seed(3))
    b = sel.select(model, train, val, budget, generator=torch.Generator().manual_seed(3))
    assert len(a) == budget and len(torch.unique(a.indices)) == budget and torch.equal(a.indices, b.indices)
    assert bool((a.weights == 1).all())
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    for key in ("select_forward_time", "select_greedy_time", "select_objective", "select_objective_random"):
        assert math.isfinite(a.stats[key])
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, budget, 4).tolist()


def test_empty_class_in_the_pool_and_candidate_pool():
    train = ImageData(image_data(50).x, torch.arange(50) % 3)  # the model has 4 classes; class 3 is absent
    sel = GlisterSelector(mean=torch.zeros(3), std=torch.ones(3), pool_fraction=0.5)
    out = sel.select(TinyNet(4, 4), train, image_data(12, seed=2), 20, generator=torch.Generator().manual_seed(0))
    assert len(out) == 20 and len(torch.unique(out.indices)) == 20


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_non_finite_gains_raise_instead_of_looping(mode):
    """NaN in the problem (a diverged model) must raise at once: an empty pick never ends the greedy."""
    import time

    from glister_train.errors import NonFiniteSelection

    problem, _ = make_problem(n=200, v=50)
    problem.h[:] = float("nan")
    start = time.perf_counter()
    with pytest.raises(NonFiniteSelection, match="non-finite candidate features"):
        greedy(problem, 50, torch.tensor([50]), mode=mode, block=5, generator=torch.Generator().manual_seed(0))
    assert time.perf_counter() - start < 1.0


def test_selector_refuses_nan_features_within_a_second():
    import time

    from glister_train.errors import NonFiniteSelection

    model = TinyNet(4, 4)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    sel = GlisterSelector(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1)
    start = time.perf_counter()
    with pytest.raises(NonFiniteSelection, match="non-finite candidate features"):
        sel.select(model, image_data(60), image_data(24, seed=1), 20, generator=torch.Generator().manual_seed(0))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_an_overflowing_lookahead_raises(mode):
    """Finite inputs whose lookahead step overflows to inf: the gains turn NaN mid-greedy."""
    from glister_train.errors import NonFiniteSelection

    problem, _ = make_problem(n=200, v=50, eta=1e38)
    with pytest.raises(NonFiniteSelection, match="no finite gain"):
        greedy(problem, 50, torch.tensor([50]), mode=mode, block=5, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- sampling from the gains


def test_sampling_keys_drop_and_keep_quotas():
    from glister_train.selection.sampling import sampling_keys

    scores = torch.tensor([5.0, 4, 3, 2, 1, -1, -2, -3, 9, 8])
    groups = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    quotas = torch.tensor([3, 2])
    keys = sampling_keys(scores, groups, quotas, temperature=1.0, drop_negative=True)
    assert torch.isinf(keys[5:8]).all() and torch.isfinite(keys[:5]).all() and torch.isfinite(keys[8:]).all()
    keys = sampling_keys(scores, groups, quotas, temperature=1.0, drop_share=0.5)
    assert torch.isinf(keys[4:8]).all() and torch.isfinite(keys[:4]).all()  # 4 of class 0's 8, 1 of class 1's 2
    assert int(torch.isinf(keys[8:]).sum()) == 0  # class 1 needs both of its two for its quota
    keys = sampling_keys(scores, groups, torch.tensor([7, 2]), temperature=1.0, drop_negative=True)
    assert int(torch.isfinite(keys[:8]).sum()) == 7 and torch.isinf(keys[7])  # the best excluded come back


def test_draw_is_exact_seeded_and_follows_the_temperature():
    from glister_train.selection.sampling import draw, sampling_keys

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(2000, generator=g)
    groups = torch.arange(2000) % 4
    quotas = budget_quotas(groups, 300, 4)
    for t, share in ((0.05, 0.0), (1.0, 0.0), (1.0, 0.3), (1e6, 0.0), (math.inf, 0.0)):
        keys = sampling_keys(scores, groups, quotas, temperature=t)
        a = draw(keys, groups, quotas, torch.Generator().manual_seed(1), share)
        b = draw(keys, groups, quotas, torch.Generator().manual_seed(1), share)
        assert torch.equal(a, b) and len(torch.unique(a)) == 300
        assert torch.bincount(groups[a], minlength=4).tolist() == quotas.tolist()
    hot = draw(sampling_keys(scores, groups, quotas, temperature=1e6), groups, quotas, torch.Generator().manual_seed(2))
    cold = draw(sampling_keys(scores, groups, quotas, temperature=0.01), groups, quotas, torch.Generator().manual_seed(2))
    topk = set(top_within_quotas_ref(scores, groups, quotas))
    assert len(topk & set(cold.tolist())) >= 290  # a low temperature is nearly the per-class top-k
    assert abs(float(scores[hot].mean())) < 0.15  # a high one nearly uniform
    uniform = sampling_keys(scores, groups, quotas, temperature=math.inf)
    assert torch.equal(uniform, torch.zeros_like(uniform))  # inf: every kept candidate alike


def top_within_quotas_ref(scores, groups, quotas):
    out = []
    for c, q in enumerate(quotas.tolist()):
        members = (groups == c).nonzero().squeeze(1)
        out += members[torch.argsort(scores[members], descending=True)[:q]].tolist()
    return out


@pytest.mark.parametrize("options", [{}, {"drop_negative": True}, {"uniform_share": 0.2, "drop_share": 0.3},
                                     {"temperature": 0.5, "redraw": True}])
def test_soft_sampling_selector_contract(options):
    train, val = image_data(60), image_data(24, seed=1)
    model = TinyNet(4, 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    sel = GlisterSelector(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft", **options)
    a = sel.select(model, train, val, 17, generator=torch.Generator().manual_seed(3))
    b = sel.select(model, train, val, 17, generator=torch.Generator().manual_seed(3))
    assert len(a) == 17 and len(torch.unique(a.indices)) == 17 and torch.equal(a.indices, b.indices)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 17, 4).tolist()
    again = sel.redraw(a.cache, train, 17, generator=torch.Generator().manual_seed(4))
    assert len(torch.unique(again.indices)) == 17
    assert torch.bincount(train.y[again.indices], minlength=4).tolist() == budget_quotas(train.y, 17, 4).tolist()
    assert sel.redraws == bool(options.get("redraw"))


def test_soft_sampling_with_a_clean_validation_set_avoids_wrong_labels():
    """The first-order gain of a mislabeled example opposes the clean validation gradient: dropping the
    negative gains and sampling the rest must hold far fewer wrong labels than the pool."""
    from glister_train.selection.sampling import draw, sampling_keys

    problem, (*_, flipped) = make_problem(n=400, v=200, noise=0.4, eta=0.05, trained=True)
    scores = problem.gains(*problem.val_gradient(problem.zv))
    quotas = torch.tensor([120])
    keys = sampling_keys(scores, torch.zeros(400, dtype=torch.long), quotas, temperature=1.0, drop_negative=True)
    chosen = draw(keys, torch.zeros(400, dtype=torch.long), quotas, torch.Generator().manual_seed(0))
    base = float(flipped.float().mean())
    assert float(flipped[chosen].float().mean()) < 0.25 * base


def test_centred_features_keep_the_model_and_sharpen_the_noise_filter():
    """Centring is a reparametrization: the logits do not change; the first-order gains of mislabeled examples
    become more clearly negative when the features share a large positive component (as ReLU features do)."""
    from glister_train.selection.sampling import draw, sampling_keys

    problem, (h, y, hv, yv, w, b, flipped) = make_problem(n=400, v=200, noise=0.4, eta=0.05, trained=True)
    shift = 6.0  # a shared offset of every feature, as after a ReLU
    shares = {}
    for centred in (False, True):
        ph, phv = h + shift, hv + shift
        bias = b - (w * shift).sum(1)  # the same logits with the shifted features
        z = ph @ w.T + bias
        r = torch.softmax(z, 1)
        r[torch.arange(len(r)), y] -= 1
        if centred:
            mu = phv.mean(0)
            ph, phv = ph - mu, phv - mu
        p = LastLayerProblem(ph, r, torch.zeros_like(y), phv, problem.zv, yv, 0.05, True, False)
        assert torch.allclose(hv @ w.T + b, (hv + shift) @ w.T + bias, atol=1e-4)
        scores = p.gains(*p.val_gradient(p.zv))
        keys = sampling_keys(scores, torch.zeros_like(y), torch.tensor([120]), temperature=1.0, drop_negative=True)
        chosen = draw(keys, torch.zeros_like(y), torch.tensor([120]), torch.Generator().manual_seed(0))
        shares[centred] = float(flipped[chosen].float().mean())
    assert shares[True] < shares[False] and shares[True] < 0.1, shares


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
    common = dict(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.05, batch_size=64)
    eager = GlisterSelector(**common, precision="fp32").select(model, train, val, 120,
                                                               generator=torch.Generator().manual_seed(0))
    ov_sel = GlisterSelector(**common, precision=precision, backend="openvino")
    fast = ov_sel.select(model, train, val, 120, generator=torch.Generator().manual_seed(0))
    overlap = len(set(eager.indices.tolist()) & set(fast.indices.tolist())) / 120
    assert overlap >= (0.99 if precision == "fp32" else 0.95), overlap
    assert fast.stats["select_objective"] == pytest.approx(eager.stats["select_objective"], rel=0.01)
    assert fast.stats["select_backend_build_time"] > 0


def test_scores_from_training_records_contract():
    """score_source=training: exact per-class budget, deterministic, model untouched; the examples never
    trained on are drawn at their class's average rate; a redraw reads the records as they are now."""
    train, val = image_data(80), image_data(24, seed=1)
    model = TinyNet(4, 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sel = GlisterSelector(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft",
                          score_source="training", drop_negative=True, center_features=True)
    assert sel.redraws
    g = torch.Generator().manual_seed(0)
    records = {"h": torch.rand(80, model.fc.in_features, generator=g), "logits": torch.randn(80, 4, generator=g),
               "seen": torch.arange(80) < 40}
    a = sel.select_from_records(model, train, val, 20, records, generator=torch.Generator().manual_seed(3))
    b = sel.select_from_records(model, train, val, 20, records, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and len(torch.unique(a.indices)) == 20
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 20, 4).tolist()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    assert a.stats["select_seen_share"] == 0.5
    assert math.isfinite(a.stats["select_objective"]) and math.isfinite(a.stats["select_objective_random"])
    records["seen"][:] = True
    again = sel.redraw(a.cache, train, 20, generator=torch.Generator().manual_seed(4), records=records)
    assert again.stats["select_seen_share"] == 1.0 and len(torch.unique(again.indices)) == 20
    none = sel.select_from_records(model, train, val, 20, None, generator=torch.Generator().manual_seed(3))
    assert len(none) == 20 and none.stats["select_seen_share"] == 0.0  # nothing trained on yet: uniform per class


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


def test_the_validation_set_estimates_the_wrong_label_share():
    """A model trained on clean data agrees with clean training labels as often as with validation labels
    (nothing to drop) and with 40%-noisy labels about 40% less often (drop about 40%, the least confident)."""
    from glister_train.selection.glister import confidence_drop

    for noise in (0.0, 0.4):
        problem, (h, y, hv, yv, w, b, flipped) = make_problem(n=2000, v=500, noise=noise, trained=True)
        probs = torch.softmax(h @ w.T + b, 1)
        confidence, share = confidence_drop(probs, y, hv @ w.T + b, yv, 0.0, estimate=True)
        assert share == pytest.approx(noise, abs=0.08)
        if noise:
            dropped = torch.argsort(confidence)[: round(share * len(y))]
            assert float(flipped[dropped].float().mean()) > 0.8  # what it drops is mostly wrong labels
        _, scaled = confidence_drop(probs, y, hv @ w.T + b, yv, 0.0, estimate=True, scale=1.5)
        assert scaled == pytest.approx(min(0.9, 1.5 * share))  # clean: still about 0; at 40%: 1.5x the estimate
    _, capped = confidence_drop(probs, y, hv @ w.T + b, yv, 0.0, estimate=True, scale=5.0)
    assert capped == 0.9


def _greedy_on(device: str, mode: str) -> torch.Tensor:
    problem, _ = make_problem(n=200, per_class=True, seed=3)
    quotas = budget_quotas(problem.groups, 50, 4)
    return greedy(problem.to(device), 50, quotas, mode=mode, block=5, generator=torch.Generator().manual_seed(0)).cpu()


@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_greedy_runs_where_the_problem_lives(mode):
    """The device path (``problem.to(device)``; the selector passes its device) picks what the plain call picks."""
    problem, _ = make_problem(n=200, per_class=True, seed=3)
    quotas = budget_quotas(problem.groups, 50, 4)
    plain = greedy(problem, 50, quotas, mode=mode, block=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_greedy_on("cpu", mode), plain)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("mode", ["naive", "stochastic", "batched"])
def test_greedy_on_a_gpu_picks_what_the_cpu_picks(mode):
    cpu, gpu = _greedy_on("cpu", mode), _greedy_on("cuda", mode)
    assert len(set(cpu.tolist()) & set(gpu.tolist())) >= 0.98 * len(cpu)  # float sums may break a near tie


def test_the_wrong_label_share_from_an_eval_mode_sample_of_the_training_set():
    """agreement_sample: the agreement with the training labels is measured as the validation accuracy is (eval mode,
    un-augmented), not from the training records, whose random logits here would imply a large share."""
    train, val = image_data(80), image_data(24, seed=1)
    model = TinyNet(4, 4).train()
    g = torch.Generator().manual_seed(0)
    records = {"h": torch.rand(80, model.fc.in_features, generator=g), "logits": torch.randn(80, 4, generator=g) * 5,
               "seen": torch.ones(80, dtype=torch.bool)}
    options = dict(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft",
                   score_source="training", drop_by="confidence", drop_share_auto=True)
    sampled = GlisterSelector(**options, agreement_sample=80)
    a = sampled.select_from_records(model, train, val, 20, records, generator=torch.Generator().manual_seed(3))
    _, z = sampled.features(model, train.x)
    _, zv = sampled.features(model, val.x)
    agree, val_acc = float((z.argmax(1) == train.y).float().mean()), float((zv.argmax(1) == val.y).float().mean())
    assert float(a.cache["agree"]) == pytest.approx(agree)
    assert a.stats["select_drop_share"] == pytest.approx(min(0.9, max(0.0, 1 - agree / max(val_acc, 1e-6))))
    assert model.training  # the sample pass leaves the model as it was
    from_records = GlisterSelector(**options).select_from_records(model, train, val, 20, records,
                                                                  generator=torch.Generator().manual_seed(3))
    assert "agree" not in from_records.cache


def test_hard_boosted_draws_are_exact_and_their_weighted_sums_unbiased():
    """hard_ratio: exact quotas per class, hard examples drawn `ratio` times as often as easy ones, weights averaging
    1 per class, and a weighted sum over the subset whose mean over draws is the kept candidates' mean (unbiased)."""
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(300) % 3
    losses = torch.rand(300, generator=g) ** 3  # skewed: fewer examples above their class mean
    kept = torch.rand(300, generator=g) > 0.1
    quotas = torch.tensor([20, 20, 19])
    values = 5 * losses + torch.randn(300, generator=g)  # correlated with the loss: unweighted draws would be biased
    estimates, hard_rates, easy_rates = [], [], []
    for seed in range(400):
        pos, w = draw_hard_boosted(losses, kept, groups, quotas, 3.0, torch.Generator().manual_seed(seed))
        assert len(torch.unique(pos)) == len(pos) == 59 and bool(kept[pos].all())
        assert torch.bincount(groups[pos], minlength=3).tolist() == quotas.tolist()
        for c in range(3):
            assert float(w[groups[pos] == c].mean()) == pytest.approx(1.0, abs=1e-5)
        c0 = (groups == 0) & kept
        hard = c0 & (losses >= losses[c0].mean())
        chosen = torch.zeros(300, dtype=torch.bool)
        chosen[pos] = True
        hard_rates.append(float(chosen[hard].float().mean()))
        easy_rates.append(float(chosen[c0 & ~hard].float().mean()))
        mask = groups[pos] == 0
        estimates.append(float((w[mask] * values[pos][mask]).mean()))
    assert sum(hard_rates) / sum(easy_rates) == pytest.approx(3.0, rel=0.1)
    c0 = (groups == 0) & kept
    assert sum(estimates) / len(estimates) == pytest.approx(float(values[c0].mean()), abs=0.03)
    again = draw_hard_boosted(losses, kept, groups, quotas, 3.0, torch.Generator().manual_seed(7))
    once = draw_hard_boosted(losses, kept, groups, quotas, 3.0, torch.Generator().manual_seed(7))
    assert torch.equal(again[0], once[0]) and torch.equal(again[1], once[1])


def test_least_seen_draws_even_out_how_often_each_example_is_trained():
    """coverage: exact quotas among the kept, the least-trained first; epoch after epoch every kept example of a
    class is trained on equally often to within one, where independent uniform draws spread the counts widely."""
    groups = torch.arange(300) % 3
    keys = torch.zeros(300).masked_fill_(torch.arange(300) % 7 == 0, -math.inf)  # some candidates excluded
    quotas = torch.tensor([30, 30, 29])
    even, uniform = torch.zeros(300, dtype=torch.int32), torch.zeros(300, dtype=torch.int32)
    g, h = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    for _ in range(10):
        pos = draw_least_seen(keys, even, groups, quotas, g)
        assert len(torch.unique(pos)) == len(pos) == 89 and bool(torch.isfinite(keys[pos]).all())
        assert torch.bincount(groups[pos], minlength=3).tolist() == quotas.tolist()
        even[pos] += 1
        uniform[draw_uniform(keys, groups, quotas, h)] += 1
    kept = torch.isfinite(keys)
    for c in range(3):
        members = kept & (groups == c)
        assert int(even[members].max() - even[members].min()) <= 1
        assert int(uniform[members].max() - uniform[members].min()) >= 4
    assert int(even[~kept].sum()) == 0
    counts = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(1), dtype=torch.int32)
    a = draw_least_seen(keys, counts, groups, quotas, torch.Generator().manual_seed(2))
    assert torch.equal(a, draw_least_seen(keys, counts, groups, quotas, torch.Generator().manual_seed(2)))
    for c in range(3):  # nothing left out was trained on less than anything drawn
        chosen = torch.zeros(300, dtype=torch.bool)
        chosen[a] = True
        left = kept & (groups == c) & ~chosen
        assert int(counts[chosen & (groups == c)].max()) <= int(counts[left].min())


def uniform_draw_case():
    """80 training and 24 validation images, a model in train mode with a copy of its state, and the options of a
    selector that draws uniformly from the training records."""
    model = TinyNet(4, 4).train()
    options = dict(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft",
                   score_source="training", temperature=math.inf)
    return image_data(80), image_data(24, seed=1), model, {k: v.clone() for k, v in model.state_dict().items()}, options


def test_the_selector_draws_the_least_trained_records_first():
    train, val, model, before, options = uniform_draw_case()
    sel = GlisterSelector(**options, coverage=True)
    g = torch.Generator().manual_seed(0)
    times_seen = torch.zeros(80, dtype=torch.int32)
    times_seen[:40] = 3  # the first half trained on three times, the rest not yet
    records = {"h": torch.rand(80, model.fc.in_features, generator=g), "logits": torch.randn(80, 4, generator=g),
               "seen": torch.ones(80, dtype=torch.bool), "times_seen": times_seen}
    a = sel.select_from_records(model, train, val, 24, records, generator=torch.Generator().manual_seed(3))
    b = sel.select_from_records(model, train, val, 24, records, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and bool((a.weights == 1).all())
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 24, 4).tolist()
    assert bool((a.indices >= 40).all())  # every class has more than its quota among the unseen half
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    redrawn = sel.redraw(a.cache, train, 24, generator=torch.Generator().manual_seed(4), records=records)
    assert bool((redrawn.indices >= 40).all())
    plain = GlisterSelector(**options).select_from_records(model, train, val, 24, records,
                                                           generator=torch.Generator().manual_seed(3))
    assert bool((plain.indices < 40).any())  # without coverage the draw ignores the counts
    with pytest.raises(ValueError, match="coverage"):
        GlisterSelector(**{**options, "temperature": 1.0}, coverage=True)


def test_the_curriculum_sets_aside_the_least_confident_early_and_nothing_after_its_span():
    assert curriculum_drop(0.0, 0.3, 0.3) == pytest.approx(0.4)  # keep twice the budget's share at the start
    assert curriculum_drop(0.15, 0.3, 0.3) == pytest.approx(0.2)  # half way: 0.6 + 0.4 / 2 kept
    assert curriculum_drop(0.3, 0.3, 0.3) == curriculum_drop(0.9, 0.3, 0.3) == curriculum_drop(0.0, 0.0, 0.3) == 0.0
    assert curriculum_drop(0.0, 0.3, 0.6) == 0.0  # twice a large budget is everything
    train, val, model, before, options = uniform_draw_case()
    options = {**options, "drop_by": "confidence"}
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(80, 4, generator=g) * 3
    records = {"h": torch.rand(80, model.fc.in_features, generator=g), "logits": logits,
               "seen": torch.ones(80, dtype=torch.bool), "times_seen": torch.ones(80, dtype=torch.int32)}
    sel = GlisterSelector(**options, curriculum=0.5)
    early = sel.select_from_records(model, train, val, 16, records, generator=torch.Generator().manual_seed(3),
                                    progress=0.0)
    assert early.stats["select_drop_share"] == pytest.approx(0.6)  # 16 of 80: keep 40% of each class
    confidence = torch.softmax(logits, 1)[torch.arange(80), train.y]
    for c in range(4):  # every drawn example is among its class's 40% most confident
        members = (train.y == c).nonzero().squeeze(1)
        easiest = members[torch.argsort(confidence[members], descending=True)[: int(0.4 * len(members))]]
        drawn = early.indices[train.y[early.indices] == c]
        assert set(drawn.tolist()) <= set(easiest.tolist())
    assert torch.bincount(train.y[early.indices], minlength=4).tolist() == budget_quotas(train.y, 16, 4).tolist()
    late = sel.redraw(early.cache, train, 16, generator=torch.Generator().manual_seed(5), records=records, progress=0.5)
    plain = GlisterSelector(**options).redraw(early.cache, train, 16, generator=torch.Generator().manual_seed(5),
                                              records=records)
    assert torch.equal(late.indices, plain.indices)  # after its span the curriculum changes nothing
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    with pytest.raises(ValueError, match="curriculum"):
        GlisterSelector(**{**options, "drop_by": "gain"}, curriculum=0.3)


def test_the_selector_boosts_high_loss_records_with_weights():
    train, val, model, before, options = uniform_draw_case()
    sel = GlisterSelector(**options, hard_ratio=4.0)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(80, 4, generator=g) * 3
    records = {"h": torch.rand(80, model.fc.in_features, generator=g), "logits": logits, "seen": torch.ones(80, dtype=bool)}
    a = sel.select_from_records(model, train, val, 24, records, generator=torch.Generator().manual_seed(3))
    b = sel.select_from_records(model, train, val, 24, records, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and torch.equal(a.weights, b.weights)
    assert len(torch.unique(a.indices)) == 24 and torch.equal(a.indices, torch.sort(a.indices).values)
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 24, 4).tolist()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    loss = F.cross_entropy(logits, train.y, reduction="none")
    chosen_loss = float(loss[a.indices].mean())
    assert chosen_loss > float(loss.mean())  # high-loss examples are drawn more often ...
    assert float(a.weights.mean()) == pytest.approx(1.0, abs=1e-5) and float(a.weights.min()) < 1 < float(a.weights.max())
    assert float((a.weights * loss[a.indices]).mean()) < chosen_loss  # ... and weighted down
    redrawn = sel.redraw(a.cache, train, 24, generator=torch.Generator().manual_seed(4), records=records)
    assert not bool((redrawn.weights == 1).all())
    with pytest.raises(ValueError, match="hard_ratio"):
        GlisterSelector(**{**options, "temperature": 1.0}, hard_ratio=2.0)


def test_drop_by_margin_drops_the_lowest_average_margin_not_the_latest_confidence():
    """drop_by=margin: the share dropped is each class's lowest margin averaged over training, so an example
    whose latest pass looks sure (a memorized wrong label) but whose history does not is the one left out."""
    train, val = image_data(80), image_data(24, seed=1)
    model = TinyNet(4, 4).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = dict(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft",
                   score_source="training", temperature=math.inf, drop_share=0.25)
    g = torch.Generator().manual_seed(0)
    logits = torch.full((80, 4), -2.0)
    logits[torch.arange(80), train.y] = 2.0  # every example's latest pass is sure of its label
    memorized = torch.zeros(80, dtype=torch.bool)  # a quarter of each class had negative margins before
    for c in range(4):
        members = torch.nonzero(train.y == c).squeeze(1)
        memorized[members[: len(members) // 4]] = True
    records = {"h": torch.rand(80, model.fc.in_features, generator=g), "logits": logits,
               "seen": torch.ones(80, dtype=torch.bool), "margin_sum": torch.where(memorized, -6.0, 9.0).double(),
               "times_seen": torch.full((80,), 3, dtype=torch.int32)}
    by_margin = GlisterSelector(**options, drop_by="margin")
    a = by_margin.select_from_records(model, train, val, 40, records, generator=torch.Generator().manual_seed(3))
    b = by_margin.select_from_records(model, train, val, 40, records, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices) and len(torch.unique(a.indices)) == 40
    assert torch.bincount(train.y[a.indices], minlength=4).tolist() == budget_quotas(train.y, 40, 4).tolist()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and model.training
    assert not bool(memorized[a.indices].any())
    by_confidence = GlisterSelector(**options, drop_by="confidence")  # all look equally sure: some come in
    c = by_confidence.select_from_records(model, train, val, 40, records, generator=torch.Generator().manual_seed(3))
    assert bool(memorized[c.indices].any())
    with pytest.raises(ValueError, match="margin"):
        GlisterSelector(**{**options, "score_source": "pass"}, drop_by="margin")


def test_quotas_follow_a_demand_and_never_exceed_a_class():
    groups = torch.tensor([0] * 100 + [1] * 50 + [2] * 10)
    assert budget_quotas(groups, 60, 3).tolist() == [37, 19, 4]  # by size
    assert budget_quotas(groups, 60, 3, torch.tensor([1.0, 1.0, 1.0])).tolist() == [25, 25, 10]  # class 2 is full
    assert budget_quotas(groups, 60, 3, torch.tensor([1.0, 2.0, 4.0])).tolist() == [17, 33, 10]  # 50 left: 1:2
    assert budget_quotas(groups, 160, 3, torch.tensor([0.0, 1.0, 1.0])).tolist() == [100, 50, 10]  # everything
    assert budget_quotas(groups, 61, 3, torch.tensor([3.0, 0.0, 0.0])).tolist() == [61, 0, 0]
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    demand = class_demand(logits, torch.tensor([0, 1, 1, 0]), 3)  # class 2 has no validation examples
    right, wrong = F.cross_entropy(logits[:1], torch.tensor([0])), F.cross_entropy(logits[2:3], torch.tensor([1]))
    assert demand.tolist() == pytest.approx([float(right), float((right + wrong) / 2), float((3 * right + wrong) / 4)])


def test_class_budget_by_validation_loss_gives_the_classes_the_model_gets_wrong_more():
    """Contract: exact budget, deterministic, and each class's count is its share by validation loss."""
    train, val = image_data(200), image_data(40, seed=1)
    model = TinyNet(4, 4).train()
    options = dict(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft",
                   score_source="training", temperature=math.inf)
    records = {"h": torch.rand(200, model.fc.in_features, generator=torch.Generator().manual_seed(0)),
               "logits": torch.zeros(200, 4), "seen": torch.ones(200, dtype=torch.bool)}
    by_loss = GlisterSelector(**options, class_budget="val_loss")
    a = by_loss.select_from_records(model, train, val, 60, records, generator=torch.Generator().manual_seed(3))
    b = by_loss.select_from_records(model, train, val, 60, records, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.indices, b.indices)
    hist = torch.bincount(train.y[a.indices], minlength=4)
    expected = budget_quotas(train.y, 60, 4, class_demand(a.cache["zv"], val.y, 4))
    assert hist.tolist() == expected.tolist() and int(hist.sum()) == 60 and len(torch.unique(a.indices)) == 60
    assert hist.tolist() != budget_quotas(train.y, 60, 4).tolist()  # the untrained model is worse on some classes
    worst, best = class_demand(a.cache["zv"], val.y, 4).argmax(), class_demand(a.cache["zv"], val.y, 4).argmin()
    sizes = torch.bincount(train.y, minlength=4)
    assert hist[worst] / sizes[worst] > hist[best] / sizes[best]
    redrawn = by_loss.redraw(a.cache, train, 60, generator=torch.Generator().manual_seed(4), records=records)
    assert torch.bincount(train.y[redrawn.indices], minlength=4).tolist() == expected.tolist()
    with pytest.raises(ValueError, match="class_budget"):
        GlisterSelector(**options, class_budget="loss")


def test_class_budget_by_validation_share_follows_the_trusted_class_mix():
    """val_share: the subset's class mix is the validation set's (capped at what a class holds); with a
    validation set in the pool's proportions the subset is the one `size` draws, example for example."""
    model = TinyNet(4, 4).train()
    options = dict(mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25), eta=0.1, sampling="soft",
                   score_source="training", temperature=math.inf)
    pixels = image_data(200).x
    skewed_y = torch.tensor([0] * 110 + [1] * 50 + [2] * 30 + [3] * 10)  # a long tail in the pool
    train = ImageData(pixels, skewed_y)
    balanced_val = ImageData(image_data(40, seed=1).x, torch.arange(40) % 4)
    records = {"h": torch.rand(200, model.fc.in_features, generator=torch.Generator().manual_seed(0)),
               "logits": torch.zeros(200, 4), "seen": torch.ones(200, dtype=torch.bool)}
    share = GlisterSelector(**options, class_budget="val_share")
    a = share.select_from_records(model, train, balanced_val, 60, records, generator=torch.Generator().manual_seed(3))
    assert torch.bincount(skewed_y[a.indices], minlength=4).tolist() == [17, 17, 16, 10]  # class 3 gives all it has
    proportional_val = ImageData(image_data(40, seed=1).x, skewed_y[::5])  # 22 / 10 / 6 / 2: the pool's mix
    size = GlisterSelector(**options)
    b = share.select_from_records(model, train, proportional_val, 60, records, generator=torch.Generator().manual_seed(3))
    c = size.select_from_records(model, train, proportional_val, 60, records, generator=torch.Generator().manual_seed(3))
    assert torch.equal(b.indices, c.indices)
