"""The fake ComfyUI's node catalogue (/object_info for both training node generations), its /prompt
validation, and the LoRA file its save node writes. Shapes follow ComfyUI's nodes.py,
comfy_extras/nodes_train.py, nodes_dataset.py and execution.py (see the protocol notes)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

DEFAULT_SHAPES = {"input_blocks.1.1.transformer_blocks.0.attn1.to_q": (32, 32)}


def _node(name: str, required: dict, outputs: list[str], optional: dict | None = None, output_names=None,
          output_node: bool = False, category: str = "training", is_list: list[bool] | None = None) -> dict:
    return {"input": {"required": required, "optional": optional or {}}, "input_order": {
        "required": list(required), "optional": list(optional or {})}, "output": outputs,
        "output_is_list": is_list or [False] * len(outputs), "output_name": output_names or outputs,
        "name": name, "display_name": name, "description": "", "python_module": "comfy_extras.nodes_train",
        "category": category, "output_node": output_node, "experimental": True}


def _combo(options: list[str], default: str | None, v3: bool) -> list:
    if v3:
        return ["COMBO", {"options": options, **({"default": default} if default else {})}]
    return [options, {"default": default} if default else {}]


def node_definitions(generation: str, checkpoints: tuple[str, ...], folders: list[str]) -> dict[str, Any]:
    v3 = generation == "new"
    nodes = {
        "CheckpointLoaderSimple": _node("CheckpointLoaderSimple", {"ckpt_name": [list(checkpoints), {}]},
                                        ["MODEL", "CLIP", "VAE"], category="loaders"),
        "VAEEncode": _node("VAEEncode", {"pixels": ["IMAGE"], "vae": ["VAE"]}, ["LATENT"], category="latent"),
        "CLIPTextEncode": _node("CLIPTextEncode", {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]},
                                ["CONDITIONING"], category="conditioning"),
        "LossGraphNode": _node("LossGraphNode", {"loss": ["LOSS_MAP"], "filename_prefix": ["STRING", {
            "default": "loss_graph"}]}, [], output_node=True),
    }
    train_required = {
        "model": ["MODEL"], "latents": ["LATENT"], "positive": ["CONDITIONING"],
        "batch_size": ["INT", {"default": 1, "min": 1, "max": 10000}],
        "grad_accumulation_steps": ["INT", {"default": 1, "min": 1, "max": 1024}],
        "steps": ["INT", {"default": 16, "min": 1, "max": 100000}],
        "learning_rate": ["FLOAT", {"default": 0.0005, "min": 1e-7, "max": 1.0}],
        "rank": ["INT", {"default": 8, "min": 1, "max": 128}],
        "optimizer": _combo(["AdamW", "Adam", "SGD", "RMSprop"], "AdamW", v3),
        "loss_function": _combo(["MSE", "L1", "Huber", "SmoothL1"], "MSE", v3),
        "seed": ["INT", {"default": 0, "min": 0, "max": 2 ** 64 - 1}],
        "training_dtype": _combo(["bf16", "fp32"], "bf16", v3),
        "lora_dtype": _combo(["bf16", "fp32"], "bf16", v3),
        "algorithm": _combo(["LoRA", "LoHa", "LoKr", "OFT"], "LoRA", v3),
        "gradient_checkpointing": ["BOOLEAN", {"default": True}],
        "existing_lora": _combo(["[None]"], "[None]", v3),
    }
    if v3:
        # The 2026 node: more inputs, and no MODEL output.
        train_required.update(checkpoint_depth=["INT", {"default": 1, "min": 1, "max": 5}],
                              offloading=["BOOLEAN", {"default": False}], bucket_mode=["BOOLEAN", {"default": False}],
                              bypass_mode=["BOOLEAN", {"default": False}])
        nodes["TrainLoraNode"] = _node("TrainLoraNode", train_required, ["LORA_MODEL", "LOSS_MAP", "INT"],
                                       output_names=["lora", "loss_map", "steps"])
        nodes["LoadImageTextDataSetFromFolder"] = _node(
            "LoadImageTextDataSetFromFolder", {"folder": _combo(folders, None, True)}, ["IMAGE", "STRING"],
            output_names=["images", "texts"], is_list=[True, True], category="dataset")
        nodes["MakeTrainingDataset"] = _node(
            "MakeTrainingDataset", {"images": ["IMAGE"], "vae": ["VAE"], "clip": ["CLIP"]},
            ["LATENT", "CONDITIONING"], optional={"texts": ["STRING", {"forceInput": True}]},
            output_names=["latents", "conditioning"], is_list=[True, True], category="dataset")
        nodes["SaveLoRA"] = _node("SaveLoRA", {"lora": ["LORA_MODEL"], "prefix": ["STRING", {
            "default": "loras/ComfyUI_trained_lora"}]}, [], optional={"steps": ["INT", {"forceInput": True}]},
            output_node=True, category="loaders")
    else:
        nodes["TrainLoraNode"] = _node("TrainLoraNode", train_required, ["MODEL", "LORA_MODEL", "LOSS_MAP", "INT"],
                                       output_names=["model_with_lora", "lora", "loss", "steps"])
        nodes["LoadImageTextSetFromFolderNode"] = _node(
            "LoadImageTextSetFromFolderNode", {"folder": [folders, {}], "clip": ["CLIP"]}, ["IMAGE", "CONDITIONING"],
            optional={"resize_method": [["None", "Stretch", "Crop", "Pad"], {"default": "None"}],
                      "width": ["INT", {"default": -1, "min": -1, "max": 10000}],
                      "height": ["INT", {"default": -1, "min": -1, "max": 10000}]})
        nodes["LoadImageSetFromFolderNode"] = _node(
            "LoadImageSetFromFolderNode", {"folder": [folders, {}]}, ["IMAGE"],
            optional={"resize_method": [["None", "Stretch", "Crop", "Pad"], {"default": "None"}]})
        nodes["SaveLoRANode"] = _node("SaveLoRANode", {"lora": ["LORA_MODEL"], "prefix": ["STRING", {
            "default": "loras/ComfyUI_trained_lora"}]}, [], optional={"steps": ["INT", {"forceInput": True}]},
            output_node=True, category="loaders")
    return nodes


def _choices(spec: list) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return spec[1].get("options", [])
    return None


def _input_error(kind: str, message: str, details: str, name: str, spec: list, value: Any) -> dict:
    return {"type": kind, "message": message, "details": details,
            "extra_info": {"input_name": name, "input_config": spec, "received_value": value}}


def validate_graph(graph: dict, info: dict) -> tuple[dict | None, dict]:
    """(error, node_errors) as execution.validate_prompt answers; (None, {}) when the graph is valid."""
    for nid, node in graph.items():
        if "class_type" not in node or node["class_type"] not in info:
            missing = node.get("class_type", "?")
            return ({"type": "invalid_prompt", "message": f"Cannot execute because node {missing} does not exist.",
                     "details": f"Node ID '#{nid}'", "extra_info": {}}, {})
    if not any(info[n["class_type"]].get("output_node") for n in graph.values()):
        return ({"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                 "extra_info": {}}, {})
    node_errors: dict[str, Any] = {}
    for nid, node in graph.items():
        spec = info[node["class_type"]]["input"]
        inputs = node.get("inputs") or {}
        errors = []
        for name, input_spec in spec["required"].items():
            if name not in inputs:
                errors.append(_input_error("required_input_missing", "Required input is missing", name, name,
                                           input_spec, None))
        for name, value in inputs.items():
            input_spec = spec["required"].get(name) or spec["optional"].get(name)
            if input_spec is None:
                continue
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = graph.get(value[0])
                outputs = info[source["class_type"]]["output"] if source else []
                wanted = input_spec[0] if isinstance(input_spec[0], str) else "COMBO"
                if source is None or not isinstance(value[1], int) or value[1] >= len(outputs):
                    errors.append(_input_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                               "[node_id, slot_index]", name, name, input_spec, value))
                elif outputs[value[1]] != wanted and wanted not in ("COMBO",):
                    errors.append(_input_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                               f"{name}, received_type({outputs[value[1]]}) mismatch input_type"
                                               f"({wanted})", name, input_spec, value))
                continue
            choices = _choices(input_spec)
            if choices is not None and value not in choices:
                errors.append(_input_error("value_not_in_list", "Value not in list",
                                           f"{name}: '{value}' not in {choices}", name, input_spec, value))
            extra = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if "min" in extra and value < extra["min"]:
                    errors.append(_input_error("value_smaller_than_min", f"Value {value} smaller than min of "
                                               f"{extra['min']}", name, name, input_spec, value))
                if "max" in extra and value > extra["max"]:
                    errors.append(_input_error("value_bigger_than_max", f"Value {value} bigger than max of "
                                               f"{extra['max']}", name, name, input_spec, value))
        if errors:
            node_errors[nid] = {"errors": errors, "dependent_outputs": [n for n, v in graph.items()
                                                                        if info[v["class_type"]].get("output_node")],
                                "class_type": node["class_type"]}
    if node_errors:
        return ({"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                 "details": "", "extra_info": {}}, node_errors)
    return None, {}


def _header(path: Path) -> dict:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


_ATTN = re.compile(r"^(down_blocks\.(\d+)\.attentions\.(\d+)|mid_block\.attentions\.0|up_blocks\.(\d+)\.attentions"
                   r"\.(\d+))\.(transformer_blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)|ff\.net\.(?:0\.proj|2)))"
                   r"\.weight$")


def attention_shapes(unet_dir: Path) -> dict[str, tuple[int, ...]]:
    """The attention Linear weights of a diffusers UNet folder, named as ComfyUI's ldm model names them."""
    unet_dir = Path(unet_dir)
    lpb = json.loads((unet_dir / "config.json").read_text())["layers_per_block"]
    header = _header(unet_dir / "diffusion_pytorch_model.safetensors")
    shapes = {}
    for key, entry in header.items():
        m = _ATTN.match(key)
        if not m:
            continue
        if m[2] is not None:
            block = f"input_blocks.{1 + int(m[2]) * (lpb + 1) + int(m[3])}.1"
        elif m[4] is not None:
            block = f"output_blocks.{int(m[4]) * (lpb + 1) + int(m[5])}.1"
        else:
            block = "middle_block.1"
        shapes[f"{block}.{m[6]}"] = tuple(entry["shape"])
    if "time_embedding.linear_1.weight" in header:
        # ComfyUI trains every weighted layer; this one no LoRA loader outside ComfyUI picks up.
        shapes["time_embed.0"] = tuple(header["time_embedding.linear_1.weight"]["shape"])
    return shapes


def write_comfyui_lora(path: Path, shapes: dict[str, tuple[int, ...]], rank: int, seed: int = 7) -> Path:
    """A LoRA as ComfyUI's TrainLoraNode + SaveLoRA write it (fp32 here; bf16 on a GPU)."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for module, (out_dim, in_dim) in sorted(shapes.items()):
        key = f"diffusion_model.{module}"
        tensors[f"{key}.lora_up.weight"] = rng.standard_normal((out_dim, rank), dtype=np.float32) * 0.05
        tensors[f"{key}.lora_down.weight"] = rng.standard_normal((rank, in_dim), dtype=np.float32) * 0.05
        tensors[f"{key}.alpha"] = np.array(1.0, dtype=np.float32)
        if module.endswith("to_out.0"):
            tensors[f"{key}.diff_b"] = rng.standard_normal((out_dim,), dtype=np.float32) * 0.01
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path
