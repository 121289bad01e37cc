from __future__ import annotations

import json
import tarfile

import pytest
import torch

from whisper_ft import archive, cache, weights
from whisper_ft.archive import Manifest, merge, write_archive
from whisper_ft.finetune import LoraSettings


@pytest.fixture(scope="module")
def peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration

    base = WhisperForConditionalGeneration.from_pretrained(weights.hf_model("tiny.en"))
    lora = LoraSettings(target_modules=("q_proj", "v_proj"), layers="all")
    model = get_peft_model(
        base, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=lora.peft_targets())
    )
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; give the adapter a real effect
            param.data.normal_(0, 0.02)
    return model.eval()


def logits(model) -> torch.Tensor:
    torch.manual_seed(1)
    features = torch.randn(1, 80, 3000)
    decoder_ids = torch.tensor([[50257, 50362, 440, 2068]])
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=decoder_ids).logits


def test_merged_model_gives_the_same_logits(peft_model):
    from transformers import WhisperForConditionalGeneration

    before = logits(peft_model)
    base = WhisperForConditionalGeneration.from_pretrained(weights.hf_model("tiny.en")).eval()
    assert not torch.allclose(before, logits(base), atol=1e-3)  # the adapter does change it
    merged = merge(peft_model)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), before, atol=2e-4, rtol=1e-4)


def test_export_packs_a_servable_archive(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    monkeypatch.setattr(cache, "WEIGHTS_DIR", tmp_path / "weights")
    base_dir = weights.hf_model("tiny.en")
    model = get_peft_model(
        WhisperForConditionalGeneration.from_pretrained(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    path = write_archive(
        model,
        WhisperProcessor.from_pretrained(base_dir),
        base_dir,
        tmp_path / "w.tar",
        Manifest(base_model="tiny.en", wer_before=10.0, wer_after=5.0),
        save_adapter=True,
    )
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))
    assert {"ct2/model.bin", "hf/model.safetensors", "adapter/adapter_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) and n.startswith("hf/") for n in names)
    assert manifest["format"] == archive.FORMAT and manifest["versions"]["peft"]
    assert not list(tmp_path.glob(".*partial"))
    assert weights.ct2_model(str(path)).name == "ct2"
