"""Builds ComfyUI's API-format training workflow from what the server lists in /object_info (no Django).

Two generations of ComfyUI's native training nodes exist: the older `LoadImageTextSetFromFolderNode`
(images + captions -> IMAGE, CONDITIONING) followed by `VAEEncode`, and the newer
`LoadImageTextDataSetFromFolder` (IMAGE list, STRING list) followed by `MakeTrainingDataset`
(LATENT, CONDITIONING). Both feed `TrainLoraNode`, whose LORA_MODEL output goes to `SaveLoRANode`
(older id) or `SaveLoRA`. Links are resolved from the listed output *types*, never from positions,
and inputs we do not map get the server's own defaults, so an added input does not break us.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRAIN = "TrainLoraNode"
CHECKPOINT_LOADER = "CheckpointLoaderSimple"
OLD_DATASET, NEW_DATASET, MAKE_DATASET = "LoadImageTextSetFromFolderNode", "LoadImageTextDataSetFromFolder", \
    "MakeTrainingDataset"
SAVE_NODES = ("SaveLoRA", "SaveLoRANode")
TRAIN_NODE_ID = "4"  # the id our graphs give the training node (its progress messages name it)

# Our optimizer names -> the names ComfyUI's TrainLoraNode lists.
OPTIMIZER_NAMES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "rmsprop": "RMSprop"}
PRECISION_NAMES = {"bf16": "bf16", "no": "fp32", "fp16": "fp16"}
# TrainLoraNode input names a scheduler could arrive under, should a server list one.
SCHEDULER_INPUTS = ("lr_scheduler", "scheduler")


class WorkflowError(Exception):
    """What this server cannot do, as `[{"loc": [...], "msg": ...}]` (the API answers 422 with it)."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(e["msg"] for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Plan:
    generation: str  # "old" or "new"
    save_node: str


def plan(object_info: dict[str, Any]) -> Plan:
    """Which training node generation this server has; WorkflowError when it has none."""
    save = next((name for name in SAVE_NODES if name in object_info), None)
    if TRAIN in object_info and save and NEW_DATASET in object_info and MAKE_DATASET in object_info:
        return Plan("new", save)
    if TRAIN in object_info and save and OLD_DATASET in object_info:
        return Plan("old", save)
    raise WorkflowError([{"loc": ["backend"], "msg": "this ComfyUI server has no native LoRA training nodes "
                          "(TrainLoraNode with a dataset loader and SaveLoRA); update ComfyUI to v0.3.45 or later"}])


def _inputs(node: dict[str, Any]) -> dict[str, Any]:
    spec = node.get("input") or {}
    return {**(spec.get("required") or {}), **(spec.get("optional") or {})}


def options_of(object_info: dict[str, Any], node: str, input_name: str) -> list[str] | None:
    """The choices a combo input lists (both the old `[[...], {}]` and the V3 `["COMBO", {"options"}]` forms)."""
    spec = _inputs(object_info.get(node) or {}).get(input_name)
    if not spec:
        return None
    if isinstance(spec[0], list):
        return [str(v) for v in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1:
        return [str(v) for v in spec[1].get("options", [])]
    return None


def _default(spec: list[Any]) -> Any:
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in extra:
        return extra["default"]
    choices = spec[0] if isinstance(spec[0], list) else extra.get("options")
    return choices[0] if choices else None


def output_index(object_info: dict[str, Any], node: str, output_type: str) -> int:
    outputs = (object_info.get(node) or {}).get("output") or []
    if output_type not in outputs:
        raise WorkflowError([{"loc": ["backend"], "msg": f"{node} on this server has no {output_type} output"}])
    return outputs.index(output_type)


def check_config(object_info: dict[str, Any], values: dict[str, Any], checkpoint: str | None) -> list[dict[str, Any]]:
    """What the server cannot run of these settings (our config's names in `loc`)."""
    errors: list[dict[str, Any]] = []
    try:
        plan(object_info)
    except WorkflowError as exc:
        return exc.errors
    listed = options_of(object_info, TRAIN, "optimizer") or []
    optimizer = OPTIMIZER_NAMES.get(values["optimizer"], values["optimizer"])
    if optimizer not in listed:
        errors.append({"loc": ["config", "optimizer"],
                       "msg": f"optimizer {values['optimizer']} is not offered by this ComfyUI server "
                              f"(it lists {', '.join(listed) or 'none'})"})
    scheduler_input = next((n for n in SCHEDULER_INPUTS if n in _inputs(object_info[TRAIN])), None)
    if scheduler_input is None and values["lr_scheduler"] not in ("constant", "constant_with_warmup"):
        errors.append({"loc": ["config", "lr_scheduler"],
                       "msg": f"lr_scheduler {values['lr_scheduler']} is not offered by this ComfyUI server "
                              "(its TrainLoraNode trains at a constant rate)"})
    elif scheduler_input and values["lr_scheduler"] not in (options_of(object_info, TRAIN, scheduler_input) or []):
        errors.append({"loc": ["config", "lr_scheduler"],
                       "msg": f"lr_scheduler {values['lr_scheduler']} is not offered by this ComfyUI server"})
    dtypes = options_of(object_info, TRAIN, "training_dtype") or []
    if PRECISION_NAMES.get(values["mixed_precision"]) not in dtypes:
        errors.append({"loc": ["config", "mixed_precision"],
                       "msg": f"mixed_precision {values['mixed_precision']} is not offered by this ComfyUI server "
                              f"(training_dtype: {', '.join(dtypes)})"})
    checkpoints = options_of(object_info, CHECKPOINT_LOADER, "ckpt_name") or []
    if checkpoint is None:
        errors.append({"loc": ["base_model"], "msg": "this ComfyUI backend has no checkpoint configured for the "
                                                     "base model (option checkpoints.<base model name>)"})
    elif checkpoint not in checkpoints:
        errors.append({"loc": ["base_model"], "msg": f"the ComfyUI server has no checkpoint {checkpoint!r} "
                                                     f"(it lists {', '.join(checkpoints[:10]) or 'none'})"})
    return errors


def build(object_info: dict[str, Any], *, checkpoint: str, folder: str, prefix: str, values: dict[str, Any],
          steps: int) -> dict[str, Any]:
    """The API-format graph: {node id: {"class_type", "inputs"}}. `values` is our validated config."""
    errors = check_config(object_info, values, checkpoint)
    if errors:
        raise WorkflowError(errors)
    chosen = plan(object_info)
    idx = lambda node, kind: output_index(object_info, node, kind)  # noqa: E731
    graph: dict[str, Any] = {"1": {"class_type": CHECKPOINT_LOADER, "inputs": {"ckpt_name": checkpoint}}}
    model, clip, vae = ["1", idx(CHECKPOINT_LOADER, "MODEL")], ["1", idx(CHECKPOINT_LOADER, "CLIP")], \
        ["1", idx(CHECKPOINT_LOADER, "VAE")]
    if chosen.generation == "old":
        loader = {"folder": folder, "clip": clip}
        listed = _inputs(object_info[OLD_DATASET])
        if "resize_method" in listed:
            # The Python function has no default for it: always send it.
            crop = "Crop" in (options_of(object_info, OLD_DATASET, "resize_method") or [])
            loader.update(resize_method="Crop" if crop else "None",
                          width=values["resolution"] if crop else -1, height=values["resolution"] if crop else -1)
        graph["2"] = {"class_type": OLD_DATASET, "inputs": _complete(object_info, OLD_DATASET, loader)}
        graph["3"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["2", idx(OLD_DATASET, "IMAGE")], "vae": vae}}
        latents, positive = ["3", 0], ["2", idx(OLD_DATASET, "CONDITIONING")]
    else:
        graph["2"] = {"class_type": NEW_DATASET, "inputs": _complete(object_info, NEW_DATASET, {"folder": folder})}
        graph["3"] = {"class_type": MAKE_DATASET, "inputs": _complete(object_info, MAKE_DATASET, {
            "images": ["2", idx(NEW_DATASET, "IMAGE")], "vae": vae, "clip": clip,
            "texts": ["2", idx(NEW_DATASET, "STRING")]})}
        latents, positive = ["3", idx(MAKE_DATASET, "LATENT")], ["3", idx(MAKE_DATASET, "CONDITIONING")]
    train = {
        "model": model, "latents": latents, "positive": positive, "batch_size": values["batch_size"],
        "grad_accumulation_steps": values["gradient_accumulation_steps"], "steps": steps,
        "learning_rate": values["learning_rate"], "rank": values["rank"],
        "optimizer": OPTIMIZER_NAMES.get(values["optimizer"], values["optimizer"]),
        "seed": values["seed"], "training_dtype": PRECISION_NAMES[values["mixed_precision"]],
        "gradient_checkpointing": values["gradient_checkpointing"], "existing_lora": "[None]",
        "algorithm": "LoRA", "loss_function": "MSE",
    }
    listed = _inputs(object_info[TRAIN])
    train = {k: v for k, v in train.items() if k in listed}
    graph[TRAIN_NODE_ID] = {"class_type": TRAIN, "inputs": _complete(object_info, TRAIN, train)}
    save = {"lora": [TRAIN_NODE_ID, idx(TRAIN, "LORA_MODEL")], "prefix": prefix}
    if "INT" in (object_info[TRAIN].get("output") or []) and "steps" in _inputs(object_info[chosen.save_node]):
        save["steps"] = [TRAIN_NODE_ID, idx(TRAIN, "INT")]
    graph["5"] = {"class_type": chosen.save_node, "inputs": save}
    return graph


def _complete(object_info: dict[str, Any], node: str, given: dict[str, Any]) -> dict[str, Any]:
    """`given` plus the server's default for every other required widget input it lists."""
    required = (object_info[node].get("input") or {}).get("required") or {}
    out = dict(given)
    for name, spec in required.items():
        if name not in out:
            default = _default(spec)
            if default is not None:
                out[name] = default
    return out
