"""Label scoring without length bias: first-token, mean and sum, and the choices training objective."""

import numpy as np
import pytest
import torch

from adaptive_learner.errors import UserError
from adaptive_learner.prompting import distinguishing_tokens, encode_examples, scoring_plan
from adaptive_learner.scoring import score
from adaptive_learner.tasks.spec import TaskSpec
from adaptive_learner.training.trainer import label_loss


def spec_with(toy_task, **changes):
    return TaskSpec.from_dict({**toy_task.spec.to_dict(), **changes})


def full_loglik(model, prompt, choice):
    """Summed log-likelihood of ``choice`` after ``prompt``, one full forward."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + choice])).logits[0].float(), -1)
    return [logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(choice)]


@pytest.mark.parametrize("choices, want", [
    ([[5], [7, 5]], ([], [[5], [7]])),  # "X" vs "not X": decided by the first token
    ([[3, 5], [3, 7, 9]], ([3], [[5], [7]])),  # a shared first word joins the prompt
    ([[3], [3, 7]], None),  # one label ends inside the other: no single token decides
    ([[1, 2], [1, 3], [4, 2]], ([], None)),  # two labels share the first token, differ later
])
def test_distinguishing_tokens(choices, want):
    got = distinguishing_tokens(choices)
    if want is None or want[1] is None:
        assert got is None
    else:
        assert got == want


def test_first_token_falls_back_to_mean_when_no_token_decides():
    assert scoring_plan([[3], [3, 7]], "first-token") == ("mean", [], [[3], [3, 7]])
    assert scoring_plan([[5], [7, 5]], "first-token") == ("first-token", [], [[5], [7]])
    with pytest.raises(UserError, match="unknown label scoring"):
        scoring_plan([[5], [7]], "longest")


def test_each_mode_scores_what_it_says(tiny_backbone, toy_task):
    """sum = the verbalizer's summed log-likelihood, mean = that over its length, first-token = the
    log-probability of the token that tells the labels apart, after the shared tokens."""
    tok, model = tiny_backbone.tokenizer, tiny_backbone.model
    verbalizers = [" good", " not good"]
    ids = [tok(v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    ex = toy_task.test[:3]
    got = {m: score(model, encode_examples(tok, spec_with(toy_task, verbalizers=verbalizers, label_scoring=m), ex, 256),
                    tok.pad_token_id) for m in ("sum", "mean", "first-token")}
    head, firsts = distinguishing_tokens(ids)
    for i, e in enumerate(ex):
        prompt = encode_examples(tok, spec_with(toy_task, label_scoring="sum"), [e], 256)[0].prompt
        per_token = [full_loglik(model, prompt, c) for c in ids]
        np.testing.assert_allclose(got["sum"][i], [sum(t) for t in per_token], atol=1e-4)
        np.testing.assert_allclose(got["mean"][i], [np.mean(t) for t in per_token], atol=1e-4)
        np.testing.assert_allclose(got["first-token"][i], [full_loglik(model, prompt + head, f)[0] for f in firsts],
                                   atol=1e-4)


def test_first_token_scores_do_not_depend_on_what_follows(tiny_backbone, toy_task):
    """'good' vs 'not good' and 'good' vs 'not good at all' are the same decision: first-token scores them
    the same; the summed log-likelihood does not (the longer label loses likelihood for its length)."""
    tok, model = tiny_backbone.tokenizer, tiny_backbone.model
    ex = toy_task.test[:4]

    def scores(verbalizers, mode):
        items = encode_examples(tok, spec_with(toy_task, verbalizers=verbalizers, label_scoring=mode), ex, 64)
        return np.array(score(model, items, tok.pad_token_id))
    short, long = [" good", " not good"], [" good", " not good at all"]
    np.testing.assert_allclose(scores(short, "first-token"), scores(long, "first-token"), atol=1e-5)
    assert np.all(scores(long, "sum")[:, 1] < scores(short, "sum")[:, 1])


def test_specs_stored_before_the_setting_keep_summed_scoring(toy_task):
    d = toy_task.spec.to_dict()
    assert toy_task.spec.label_scoring == "first-token"  # new tasks: the default
    d.pop("label_scoring")
    assert TaskSpec.from_dict(d).label_scoring == "sum"
    assert TaskSpec.from_dict(toy_task.spec.to_dict()).label_scoring == "first-token"
    with pytest.raises(UserError, match="label scoring"):
        spec_with(toy_task, label_scoring="longest")


def test_choices_objective_is_cross_entropy_over_the_labels(tiny_backbone, toy_task):
    tok, model = tiny_backbone.tokenizer, tiny_backbone.model
    items = encode_examples(tok, toy_task.spec, toy_task.train[:5], 64)
    assert all(len(c) == 1 for it in items for c in it.choices)
    with torch.no_grad():
        got = label_loss(model, items, tok.pad_token_id, torch.device("cpu"), objective="choices")[0].item()
        lm = label_loss(model, items, tok.pad_token_id, torch.device("cpu"), objective="lm")[0].item()
    want = []
    for it in items:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([it.prompt])).logits[0, -1].float()
        want.append(-torch.log_softmax(logits[[c[0] for c in it.choices]], -1)[it.label].item())
    assert got == pytest.approx(np.mean(want), abs=1e-4)
    assert lm > got  # the whole vocabulary competes in lm; only the labels in choices


def test_sequence_file_sets_label_scoring(tmp_path):
    import shutil

    from conftest import FIXTURES
    from adaptive_learner.tasks.sequences import load_sequence

    shutil.copy(FIXTURES / "toy_sentiment.csv", tmp_path / "toy.csv")
    f = tmp_path / "s.yaml"
    f.write_text("name: s\ntasks:\n  - name: a\n    data: toy.csv\n    description: d\n    label_scoring: mean\n"
                 "  - name: b\n    data: toy.csv\n    description: d\n")
    seq = load_sequence(str(f))
    assert [t.spec.label_scoring for t in seq.tasks] == ["mean", "first-token"]
    f.write_text("name: s\ntasks:\n  - name: a\n    data: toy.csv\n    description: d\n    label_scoring: longest\n")
    with pytest.raises(UserError, match="label_scoring"):
        load_sequence(str(f))
