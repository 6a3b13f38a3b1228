"""fixtures/ls.py: the LS pool, tunnels and connectors come from the registry, are disjoint where the
settings say so, build on a tiny pool, and record a diverged optimum instead of using it; the path
evaluation cannot be fooled by a tunnel that is low only at its optimised points."""
import dataclasses

import pytest
import torch

from core.connectors import barrier, polyline_losses
from core.registry import load_registry
from fixtures import ls


def test_pool_pairs_and_sets_come_from_the_registry():
    reg = load_registry()
    pool = ls.ls_pool_spec("cpu")
    assert pool.seeds == tuple(range(reg["LS-5"].setting("pool_size", "cpu")))
    assert pool.config.optimizer == "adam" and pool.config.lr == reg["LS-5"].setting("train_lr")
    tun = ls.tunnel_specs("cpu")
    pairs = tun["claim"].pairs
    assert len(pairs) == reg["LS-5"].seeds["cpu"] and len({i for p in pairs for i in p}) == 2 * len(pairs)
    assert tun["control"].pairs == pairs and not tun["control"].optimise
    con = ls.connector_specs("cpu")
    for m in reg["LS-7"].setting("m_grid"):
        sets = con[f"m={m}"].sets
        flat = [i for s in sets for i in s]
        assert all(len(s) == m + 1 for s in sets) and len(set(flat)) == len(flat) and max(flat) < len(pool.seeds)


def test_a_missing_registry_value_names_it():
    reg = load_registry()
    settings = {k: v for k, v in reg["LS-5"].settings.items() if k != "pool_size"}
    broken = {"LS-5": dataclasses.replace(reg["LS-5"], settings=settings), "LS-7": reg["LS-7"]}
    with pytest.raises(KeyError, match="pool_size"):
        ls.ls_pool_spec("cpu", broken)


def _tiny_pool():
    from fixtures.sd import build_ensemble
    pool = ls.ls_pool_spec("cpu")
    pool = dataclasses.replace(pool, config=dataclasses.replace(pool.config, epochs=1, checkpoints=(0, 8), hessian_rows=20),
                               seeds=(0, 1, 2, 3))
    return pool, build_ensemble(pool)


def test_tiny_tunnels_and_connectors_build_and_a_diverged_optimum_is_recorded():
    pool, art = _tiny_pool()
    tun = dataclasses.replace(ls.tunnel_specs("cpu")["claim"], parent=pool, pairs=((0, 1), (2, 3)), n_segments=6,
                              points_per_segment=5, optim=dataclasses.replace(ls.tunnel_specs("cpu")["claim"].optim, steps=2))
    art["seed_status"] = ["ok", "ok", "diverged at step 3: non-finite parameters (x)", "ok"]
    out = ls.build_tunnels(tun, art)
    assert out["pair_status"] == ["ok", "optimum diverged"] and out["kept"] == [0]
    assert out["linear_losses"].shape == out["tunnel_losses"].shape == (1, (tun.n_segments) * (tun.points_per_segment - 1) + 1)
    assert torch.allclose(out["agree_a"][:, 0], torch.ones(1, dtype=out["agree_a"].dtype))  # A agrees with itself
    con = dataclasses.replace(ls.connector_specs("cpu")["m=2"], parent=pool, sets=((0, 1, 3), (1, 2, 3)), points_per_segment=5,
                              optim=dataclasses.replace(ls.connector_specs("cpu")["m=2"].optim, steps=2))
    got = ls.build_connectors(con, art)
    assert got["set_status"] == ["ok", "optimum diverged"] and got["segment_losses"].shape[:2] == (1, 3)


def test_the_unoptimised_control_leaves_the_points_on_the_line():
    pool, art = _tiny_pool()
    spec = dataclasses.replace(ls.tunnel_specs("cpu")["control"], parent=pool, pairs=((0, 1),), n_segments=6,
                               points_per_segment=5)
    out = ls.build_tunnels(spec, art)
    assert float(out["deviation_norm"].max()) < 1e-6 * float(out["distance"].max())
    assert torch.allclose(out["tunnel_barrier"], out["linear_barrier"], atol=1e-5)


def test_a_tunnel_low_only_at_its_nodes_shows_its_barrier():
    """A loss that is 0 at the nodes and 5 between them: evaluated at 41 points per segment, the
    path's barrier is 5, not the 0 its optimised points alone would suggest."""
    nodes = torch.linspace(0, 1, 21, dtype=torch.float64)[None, :, None]  # [1, 21, 1]: nodes at k/20

    def loss(P):
        frac = (P[..., 0] * 20) % 1.0
        return torch.where((frac < 1e-9) | (frac > 1 - 1e-9), 0.0, 5.0)
    assert float(loss(nodes).max()) == 0.0
    assert float(barrier(polyline_losses(loss, nodes, 41))) == pytest.approx(5.0)
