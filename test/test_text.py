"""Text encoders (real offline MiniLM, a random-weight OpenCLIP from a local file), prompts, cache."""
import json

import numpy as np
import pytest

from patchalign_ros.text import (PromptEmbedder, TextEncoderError, check_dimensions, clean_label, load_text_encoder,
                                 prompts_for, validate_queries)


def test_clean_label_and_prompt_ensembles():
    assert clean_label("  Mug_Handle!! ") == "mug handle"
    assert clean_label("gas-tank") == "gas tank"
    assert prompts_for("Handle") == ["handle", "a handle", "handle part"]
    assert prompts_for("lid", "Tea_pot") == ["a lid of a tea pot", "the lid of a tea pot", "lid of tea pot",
                                             "a lid part of a tea pot"]


@pytest.mark.parametrize("bad, match", [([], "no part names"), ([""], "no part names"), (["  "], "no part names"),
                                        (["!!!"], "empty after cleaning"), (["a" * 201], "too long"),
                                        (["lid", "lid"], "duplicate")])
def test_bad_queries_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_queries(bad)


def test_minilm_offline_embeddings(minilm, tmp_path):
    assert minilm.dim == 384
    emb = PromptEmbedder(minilm, cache_dir=tmp_path)
    vecs = emb.embed(["handle", "mug handle", "wing"])
    assert vecs.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sim = vecs @ vecs.T
    assert sim[0, 1] > sim[0, 2]  # "handle" is closer to "mug handle" than to "wing"


def test_embedding_cache_memory_and_disk(minilm, tmp_path):
    first = PromptEmbedder(minilm, cache_dir=tmp_path)
    a = first.embed(["spout"])
    assert first.encoded_count == 3  # one per prompt of the ensemble
    first.embed(["spout"])
    assert first.encoded_count == 3  # served from memory
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == 3
    second = PromptEmbedder(minilm, cache_dir=tmp_path)  # a new process would start like this
    b = second.embed(["spout"])
    assert second.encoded_count == 0
    np.testing.assert_array_equal(a, b)
    files[0].write_bytes(b"torn file")  # a damaged entry is recomputed, not trusted
    third = PromptEmbedder(minilm, cache_dir=tmp_path)
    np.testing.assert_allclose(third.embed(["spout"]), a, atol=1e-6)
    assert third.encoded_count == 1


def test_dimension_mismatch_is_refused():
    with pytest.raises(TextEncoderError, match="384-d.*1280-d"):
        check_dimensions(384, 1280, "minilm")


def test_unknown_or_missing_text_encoders(tmp_path):
    with pytest.raises(TextEncoderError, match="unknown text encoder"):
        load_text_encoder("word2vec")
    with pytest.raises(TextEncoderError, match="needs weights"):
        load_text_encoder("openclip:ViT-bigG-14")
    with pytest.raises(TextEncoderError, match="not found"):
        load_text_encoder(f"openclip:ViT-bigG-14@{tmp_path}/open_clip_model.safetensors")
    with pytest.raises(TextEncoderError, match="not found"):
        load_text_encoder(f"sentence-transformers:{tmp_path}/nothing")


def test_openclip_text_tower_from_local_checkpoint(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    import torch

    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    cfg_path = tmp_path / "TinyCLIP-test.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model("TinyCLIP-test")
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    enc = load_text_encoder(f"openclip:{cfg_path}@{ckpt}")
    assert enc.dim == 32
    vecs = enc.encode(["handle", "a handle", "wing"])
    assert vecs.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    tokens = open_clip.get_tokenizer("TinyCLIP-test")(["handle"])
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.eval().encode_text(tokens).float(), dim=-1)
    np.testing.assert_allclose(vecs[0], expected[0].numpy(), atol=1e-5)
    emb = PromptEmbedder(enc, cache_dir=tmp_path / "cache")
    assert emb.embed(["handle"]).shape == (1, 32)
