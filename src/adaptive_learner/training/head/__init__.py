"""A linear head on the frozen backbone's features, mixed with the adapter's label scores.

A LoRA adapter learns well what the backbone can already almost do (sentiment, question types);
on tasks it barely moves in a few hundred steps (sentence pairs, label words it has no prior
for), a linear classifier on the frozen backbone's pooled hidden states, fitted in seconds, is
often better (BENCHMARKS "Per-task quality"). So every task gets both, and one number decides
how they are mixed:

    p(label | x) = mix * softmax(adapter scores) + (1 - mix) * softmax(head(features(x)))

``mix`` is decided on the adapter's held-out examples (the same split early stopping used, with
the head fitted on the rest); then the head is refitted on every training example. ``mix = 1``
is the adapter alone. A task without enough examples to hold out gets the rule's mix without evidence
(``no_evidence_mix``: the equal mix, or the fixed number) and a head fitted on every example. The default rule,
``gated``, mixes the two equally unless the held-out examples tell them apart (a McNemar test at
5%: one is right where the other is wrong clearly more often), and then keeps the better one
alone; ``held-out`` picks the mix in :data:`MIXES` with the best held-out accuracy, which a few
dozen examples choose by chance as often as not (measured: benchmarks/head_choice.py, BENCHMARKS
"Adapter or head"); a number fixes the mix.

Features: the frozen backbone's hidden states at one layer (two thirds of the depth by default),
averaged over the prompt's tokens. They come from the backbone with every adapter disabled, so a
task's head stays valid when its adapter is later reused and changed by another task. The head may
also see views from a sentence encoder (the router's). By default, for an input of two or more fields
(a sentence pair, a passage and a question), ``pair``: how the first two fields relate,
``[u, v, |u - v|, u * v]`` of their sentence embeddings, the classic sentence-pair features
(paraphrase and similarity: BENCHMARKS "The head sees how a pair's fields relate"), kept when it lowers
the head's cross-validated log loss on the training examples (:func:`choose_views`).

``text`` (the sentence embedding of the input's fields as one text, what a frozen-encoder classifier
sees) is considered too (``TrainConfig.head_views``, default ``text,pair``), by one of three rules
(``head_view_rule``): ``gated`` (the default: the pair view as by ``min``; a set with the text view only
where the head's cross-validated answers with it beat those without by the mix's McNemar gate), ``min``
(the lowest cross-validated log loss) and ``one-se``. With ``min`` the text view lowered the loss on every
row rerun and the mixed answer lost on six of them (rotten_tomatoes at 512, -5.5; BENCHMARKS "A text view
for the head"); ``gated`` adds it on 5 of 32 catalog rows (the long news articles; trec and question-wants at
512), the answer changing on two (bbc_news +2.0 at 512, -1.0 at 160; BENCHMARKS, session 19).

Temperatures (``TrainConfig.head_calibrate``): ``head`` divides the head's logits by a temperature fitted to
its out-of-fold answers on the training part, ``both`` also the adapter's scores by one fitted to its
held-out answers; measured, not adopted (BENCHMARKS, session 19: the calibrated head weighs less in the mix,
which costs the rows where the head carries the answer, rte and stsb).

Every decision is made by :func:`decide_head` from arrays (:func:`head_arrays`), so that a benchmark that
kept them (``benchmarks/per_task_quality.py --dump``, ``benchmarks/head_policy.py``) replays it exactly.

The package, in the order a head is made: :mod:`.views` (what it sees), :mod:`.model` (the classifier and the
mix), :mod:`.choice` (how views, mix and temperatures are decided), :mod:`.task` (fitted for a task, stored in
the library).
"""

from .choice import (CALIBRATIONS, DEFAULT_VIEW_RULE, DEFAULT_VIEWS, FREE_VIEWS, GATE_Z, L2_GRID, MIX_RULES, MIXES,
                     VIEW_RULES, check_head_options, check_mix_rule, choose_l2,
                     choose_mix, choose_views, cv_log_loss, cv_log_probs, cv_losses, decide_head, fit_temperature,
                     no_evidence_mix)
from .model import FeatureHead, fit_head
from .task import fit_task_head, head_arrays, head_files, load_head, stage_head
from .views import VIEWS, default_layer, encoder_views, pair_view, prompt_features, text_view, views_for

__all__ = ["CALIBRATIONS", "DEFAULT_VIEW_RULE", "DEFAULT_VIEWS", "FREE_VIEWS", "GATE_Z", "L2_GRID", "MIX_RULES",
           "MIXES", "VIEWS", "VIEW_RULES", "FeatureHead", "check_head_options", "check_mix_rule", "choose_l2",
           "choose_mix", "choose_views", "cv_log_loss", "cv_log_probs", "cv_losses", "decide_head",
           "default_layer", "encoder_views", "fit_head", "fit_task_head", "fit_temperature", "head_arrays",
           "head_files", "load_head", "no_evidence_mix", "pair_view", "prompt_features", "stage_head", "text_view", "views_for"]
