"""The entailment app in-process: its committed weights, its data generator, its probe.

No server and no worker: the model is set up here with its files given by hand, as the
worker would after checking them (``tests/integration/test_entailment.py`` runs it served).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from watchkeeper.apps.entailment import Entailment, data, scenes, sentences, weights_file
from watchkeeper.apps.entailment.app import PROBE_SCENE, PROBE_SENTENCES, probe_picture
from watchkeeper.apps.entailment.evaluate import accuracy_report, predict
from watchkeeper.worker import images

TARGET = 0.90
SAMPLE = 300
#: Phrases only the held-out templates make (the training must never produce them).
HELD_OUT_PHRASES = ("the scene contains", "in the picture is", "to the right of")


def make_model(weights: Path = weights_file.PACKAGED, **options: object) -> Entailment:
    """An Entailment set up as the worker would: options validated, files in place."""
    model = Entailment()
    model.options = Entailment.Options.model_validate(options)
    model._files = {weights_file.WEIGHTS_NAME: weights}
    model.setup("cpu")
    return model


@pytest.fixture(scope="module")
def model() -> Entailment:
    return make_model()


def run(model: Entailment, text: str, picture: np.ndarray | bytes, **params: object) -> dict:
    """Validate like the worker does, then predict."""
    inputs = model.Inputs.model_validate({"image": picture, "text": text})
    return model.predict(inputs, model.Params(**params))


# --- the committed weights -----------------------------------------------------------------


def test_the_card_records_the_committed_file() -> None:
    card = weights_file.card()
    entry = card["files"][weights_file.WEIGHTS_NAME]
    blob = weights_file.PACKAGED.read_bytes()
    assert hashlib.sha256(blob).hexdigest() == entry["sha256"]
    assert len(blob) == entry["bytes"] < 4 * 2**20
    assert card["generator_version"] == scenes.GENERATOR_VERSION
    assert card["vocabulary"] == sentences.vocabulary()
    assert card["training_command"].startswith("python -m watchkeeper.apps.entailment.train")
    assert card["accuracy"]["overall"] >= TARGET


def test_the_weights_carry_the_vocabulary_they_were_trained_with() -> None:
    _, vocab = weights_file.load(weights_file.PACKAGED)
    assert vocab == sentences.vocabulary()


def test_the_weights_reach_the_target_on_held_out_scenes() -> None:
    batch = data.held_out_set(SAMPLE)
    net, vocab = weights_file.load(weights_file.PACKAGED)
    report = accuracy_report(batch.labels, predict(net, vocab, batch), batch.templates)
    assert report["overall"] >= TARGET, report
    assert min(report["per_class"].values()) >= TARGET, report
    assert report["held_out_templates"] >= TARGET, report


# --- the generator ----------------------------------------------------------------------------


def test_scenes_and_sentences_are_deterministic_under_a_seed() -> None:
    def draw(seed: int) -> tuple[list, list, np.ndarray]:
        rng = np.random.default_rng(seed)
        layouts = [scenes.random_scene(rng) for _ in range(20)]
        items = [sentences.sample_item(s, rng, held_out=i % 2 == 0) for i, s in enumerate(layouts)]
        return layouts, items, np.stack([scenes.render(s, rng) for s in layouts])

    first, again, other = draw(5), draw(5), draw(6)
    assert first[0] == again[0] and first[1] == again[1]
    assert np.array_equal(first[2], again[2])
    assert first[0] != other[0]


def test_the_held_out_templates_never_appear_in_training_data() -> None:
    layouts = data.training_layouts(500)
    pixels = np.zeros((len(layouts), 3, scenes.SIZE, scenes.SIZE), np.uint8)
    batch, _ = data.training_sentences(layouts, pixels, 5000, np.random.default_rng(0))
    assert sentences.HELD_OUT and not set(batch.templates) & sentences.HELD_OUT
    assert not [s for s in batch.sentences if any(p in s for p in HELD_OUT_PHRASES)]
    colour_made = {f"the {c} {s} is made of" for c in scenes.COLOURS for s in scenes.SHAPES}
    assert not [s for s in batch.sentences if any(s.startswith(p) for p in colour_made)]


def test_the_held_out_set_uses_unseen_scenes_and_the_held_out_templates() -> None:
    seen = {data.layout_key(s) for s in data.training_layouts()}
    rng = np.random.default_rng(data.EVAL_SEED)  # the evaluation's own stream, as drawn there
    assert any(data.layout_key(scenes.random_scene(rng)) in seen for _ in range(2000)), \
        "the check below would be vacuous: no evaluation layout collides with training"
    batch = data.held_out_set(200, seen)
    assert set(batch.templates[1::2]) <= sentences.HELD_OUT
    assert not set(batch.templates[0::2]) & sentences.HELD_OUT
    assert sorted(set(batch.labels.tolist())) == [0, 1, 2]


def test_the_labels_follow_the_scene() -> None:
    scene = scenes.Scene((scenes.Thing("circle", "red", 0, 0), scenes.Thing("square", "blue", 2, 3)))
    assert sentences.relation_holds(scene, ("circle", "red"), ("square", None), "left of")
    assert sentences.relation_holds(scene, ("circle", None), ("square", "blue"), "above")
    assert not sentences.relation_holds(scene, ("circle", None), ("square", None), "right of")
    assert not sentences.relation_holds(scene, ("circle", None), ("circle", None), "left of")


# --- the app ---------------------------------------------------------------------------------


def test_the_probe_scene_gets_the_three_known_answers(model: Entailment) -> None:
    png = images.png(probe_picture()).data
    for text, want in PROBE_SENTENCES:
        out = run(model, text, png)
        assert out["label"] == want, (text, out)
        assert set(out["scores"]) == {"yes", "no", "maybe"}
        assert abs(sum(out["scores"].values()) - 1) < 1e-4


def test_the_probe_passes_with_the_packaged_weights(model: Entailment) -> None:
    example = model.probe()
    out = model.predict(model.Inputs.model_validate(example.inputs), model.Params())
    assert example.check is not None and example.check(out) is True


def test_the_probe_fails_with_shuffled_weights_and_names_the_sentences(tmp_path: Path) -> None:
    wrong = shuffled_weights(tmp_path / "shuffled.safetensors")
    broken = make_model(wrong)
    example = broken.probe()
    out = broken.predict(broken.Inputs.model_validate(example.inputs), broken.Params())
    assert example.check is not None
    with pytest.raises(AssertionError, match="wrong answers on the probe scene: '") as failure:
        example.check(out)
    assert "expected" in str(failure.value)


def test_a_batch_answers_like_single_items(model: Entailment) -> None:
    picture = probe_picture()
    texts = [text for text, _ in PROBE_SENTENCES] * 4
    inputs = [model.Inputs.model_validate({"image": picture, "text": t}) for t in texts]
    batch = model.predict_batch(inputs, [model.Params()] * len(inputs))
    assert [o["label"] for o in batch] == [want for _, want in PROBE_SENTENCES] * 4
    single = run(model, texts[1], picture)
    assert single["scores"] == pytest.approx(batch[1]["scores"], abs=1e-5)


def test_a_large_picture_is_shrunk_like_the_training_pictures(model: Entailment) -> None:
    big = scenes.render(PROBE_SCENE, np.random.default_rng(1), supersample=10)  # 320 px
    assert [run(model, text, big)["label"] for text, _ in PROBE_SENTENCES] == \
        [want for _, want in PROBE_SENTENCES]


def test_the_threshold_turns_unsure_answers_into_maybe(model: Entailment) -> None:
    picture = probe_picture()
    assert run(model, "the square is green", picture)["label"] == "no"
    assert run(model, "the square is green", picture, threshold=1.0)["label"] == "maybe"


def test_files_declare_the_packaged_weights_with_the_cards_digest() -> None:
    (packaged,) = Entailment.files(Entailment.Options())
    assert packaged.name == weights_file.WEIGHTS_NAME and packaged.path is None
    assert packaged.source == weights_file.PACKAGED
    assert packaged.sha256 == weights_file.card()["files"][weights_file.WEIGHTS_NAME]["sha256"]
    other = Entailment.Options(weights=Path("/tmp/x.safetensors"), weights_sha256="ab" * 32)
    (chosen,) = Entailment.files(other)
    assert chosen.path == Path("/tmp/x.safetensors") and chosen.sha256 == "ab" * 32


def test_options_refuse_unknown_keys_and_malformed_digests() -> None:
    with pytest.raises(ValidationError):
        Entailment.Options.model_validate({"weight": "/x"})
    with pytest.raises(ValidationError):
        Entailment.Options.model_validate({"weights_sha256": "not-hex"})


def test_inputs_are_bounded() -> None:
    png = images.png(probe_picture()).data
    with pytest.raises(ValidationError):
        Entailment.Inputs.model_validate({"image": png, "text": " \u200b "})
    with pytest.raises(ValidationError):
        Entailment.Inputs.model_validate({"image": png, "text": "a" * 301})


def test_a_file_that_is_not_entailment_weights_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(other))
    with pytest.raises(ValueError, match="no vocabulary"):
        weights_file.load(other)


def shuffled_weights(path: Path, seed: int = 0) -> Path:
    """The packaged weights with every tensor's values shuffled: right shapes, wrong model."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    with safe_open(str(weights_file.PACKAGED), framework="np") as handle:
        metadata = handle.metadata()
        tensors = {}
        for key in handle.keys():
            values = handle.get_tensor(key)
            tensors[key] = rng.permutation(values.ravel()).reshape(values.shape)
    save_file(tensors, str(path), metadata=metadata)
    return path
