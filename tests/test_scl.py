"""SCL (METHOD §6): sentence-transformers' loss equals the formula, and a tiny real fine-tune of the packaged
MiniLM runs, saves a loadable embedder and is not repeated."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import log_softmax

from profilekit.embedder import Embedder, packaged_minilm_path
from profilekit.scl import SCLConfig, scl_loss, symmetric_infonce, train_scl, training_pairs

USERS = [
    "Alien (1979) 5.0, Heat (1995) 4.0, Toy Story (1995) 2.0",
    "Sense and Sensibility (1995) 5.0, Emma (1996) 4.0",
    "Babe (1995) 4.0, Toy Story (1995) 5.0, Aladdin (1992) 4.0",
    "GoldenEye (1995) 4.0, Heat (1995) 5.0",
    "Casablanca (1942) 5.0, Vertigo (1958) 4.0",
]
ITEMS = [
    "Title: Aliens (1986). Genres: Action|Sci-Fi",
    "Title: Persuasion (1995). Genres: Drama|Romance",
    "Title: Pocahontas (1995). Genres: Animation|Children's",
    "Title: Die Hard (1988). Genres: Action|Thriller",
    "Title: Rear Window (1954). Genres: Mystery|Thriller",
]


def test_symmetric_infonce_is_the_mean_of_both_directions_softmax():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    un, vn = u / np.linalg.norm(u, axis=1, keepdims=True), v / np.linalg.norm(v, axis=1, keepdims=True)
    s = un @ vn.T / 0.07
    expected = -0.5 * (np.diag(log_softmax(s, axis=1)).mean() + np.diag(log_softmax(s.T, axis=1)).mean())
    got = symmetric_infonce(torch.tensor(u), torch.tensor(v), 0.07).item()
    assert got == pytest.approx(expected, rel=1e-10)


def test_sentence_transformers_loss_equals_the_formula_in_value_and_gradient():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(packaged_minilm_path()), device="cpu", local_files_only=True)
    model.eval()  # dropout off: both computations see the same network
    features = [model.preprocess(USERS), model.preprocess(ITEMS)]
    params = [p for p in model.parameters() if p.requires_grad]

    library = scl_loss(model, 0.07)(features, labels=None)
    library_grads = torch.autograd.grad(library, params, allow_unused=True)
    users, items = (model(dict(f))["sentence_embedding"] for f in features)
    direct = symmetric_infonce(users, items, 0.07)
    direct_grads = torch.autograd.grad(direct, params, allow_unused=True)

    assert library.item() == pytest.approx(direct.item(), rel=1e-6)
    assert library.item() > 0.05  # not a degenerate batch
    used = [(a, b) for a, b in zip(library_grads, direct_grads) if b is not None]  # the unused pooler has none
    assert len(used) > 90 and all(a is not None for a, _ in used)
    diff = torch.cat([(a - b).flatten() for a, b in used]).norm()
    # Per-tensor relative error is meaningless for attention key biases, whose true gradient is 0 (softmax is
    # shift-invariant) and which hold float noise of ~1e-9 in both computations; compare the whole gradient.
    assert float(diff / torch.cat([b.flatten() for _, b in used]).norm()) < 1e-5


def test_pairs_use_10h_or_10h_plus_profile_and_the_item_text():
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B", "C"], "text": ["Title: A", "Title: B", "Title: C"]})
    examples = pd.DataFrame({
        "domain": ["d", "d"], "user_id": ["u1", "u2"], "cut": [0, 0], "target_item_id": ["c", "a"],
        "history_items": ['["a", "b"]', '["b"]'], "history_ratings": ["[5.0, 3.0]", "[4.0]"],
    })
    history = training_pairs(examples, items, None, 10, "history")
    assert list(history["context"]) == ["10-H", "10-H"] and list(history["positive"]) == ["Title: C", "Title: A"]
    assert "A" in history["anchor"].iloc[0] and "B" in history["anchor"].iloc[0]
    profiles = pd.DataFrame({"user_id": ["u1"], "cut": [0], "profile": ["Likes letters."]})
    with_profile = training_pairs(examples, items, profiles, 10, "blue")
    assert len(with_profile) == 1  # u2 has no profile
    assert with_profile["anchor"].iloc[0] == history["anchor"].iloc[0] + "\nLikes letters."


def test_tiny_scl_run_trains_saves_a_loadable_embedder_and_is_not_repeated(tmp_path):
    config = SCLConfig(batch_size=4, learning_rate=1e-4, epochs=2, max_seq_length=64, warmup_ratio=0.0)
    out = tmp_path / "run"
    result = train_scl(packaged_minilm_path(), USERS * 2, ITEMS * 2, config, out, log=lambda _: None)
    assert result.trained_now and result.steps == len(result.log) >= 2
    assert all(np.isfinite(r["loss"]) for r in result.log)

    base, adapted = Embedder(), Embedder(out)
    assert adapted.version != base.version and adapted.max_seq_length == 64
    u, i = adapted.encode(USERS), adapted.encode(ITEMS)
    u0, i0 = base.encode(USERS), base.encode(ITEMS)
    assert np.trace(u @ i.T) > np.trace(u0 @ i0.T)  # the training pairs moved closer together

    again = train_scl(packaged_minilm_path(), USERS * 2, ITEMS * 2, config, out, log=lambda _: None)
    assert not again.trained_now and again.log == result.log and Embedder(out).version == adapted.version
