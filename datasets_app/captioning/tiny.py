"""A tiny randomly initialised BLIP captioner built from configs (a few hundred KB), so tests and
the demo run the real `local` provider with no download. Its captions are random words from a
small vocabulary: it proves the plumbing, not the captioning."""

from __future__ import annotations

from pathlib import Path

WORDS = ("a an the photo of picture red green blue yellow purple white circle square triangle on "
         "background shape small large bright dark").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
IMAGE_SIDE = 32


def _tokenizer():
    """A BERT WordPiece tokenizer built in memory. Built from a vocab.txt instead, transformers 5
    can produce a tokenizer with an empty vocabulary; the tokenizer object route always has one."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = {word: index for index, word in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]",
                                  pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"the tiny tokenizer came out with {len(tokenizer)} tokens, expected {len(vocab)}")
    return tokenizer


def build_tiny_captioner(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a BLIP (`BlipForConditionalGeneration` + `BlipProcessor`) folder that
    `AutoModelForImageTextToText` / `AutoProcessor` load offline; returns the folder."""
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    out = Path(out_dir)
    tokenizer = _tokenizer()
    special = {name: tokenizer.convert_tokens_to_ids(name) for name in ("[PAD]", "[CLS]", "[SEP]")}
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": IMAGE_SIDE, "patch_size": 8},
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64,
                     "encoder_hidden_size": 32, "pad_token_id": special["[PAD]"],
                     "bos_token_id": special["[CLS]"], "sep_token_id": special["[SEP]"],
                     "eos_token_id": special["[SEP]"]},
        projection_dim=32, image_text_hidden_size=32)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = BlipForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": IMAGE_SIDE, "width": IMAGE_SIDE}),
                              tokenizer=tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out
