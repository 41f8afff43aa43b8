#!/usr/bin/env python3
"""Export a flow built with tools/nflow_torch.py to a safetensors file that nflow loads.

  export_nflow.py CHECKPOINT OUT.safetensors [--dtype f64|f32] [--cpp]
  export_nflow.py --demo OUT.safetensors [--dtype f64|f32] [--cpp] [--save-checkpoint model.pt]

CHECKPOINT is either
  * a bridge checkpoint: torch.save({"nflow_torch_config": json.dumps(nflow_torch.to_config(model)),
    "state_dict": model.state_dict()}, path) (what --save-checkpoint writes; the config is a JSON
    string because PyTorch 1.13's weights_only loader refuses floats); loaded with weights_only
    where the installed PyTorch supports it; or
  * a whole pickled nflow_torch module, torch.save(model, path), with --pickled-module (this runs
    the pickle: only for files you trust).

The file holds exactly the tensors nflow's io::load expects, by nflow's names
(state_dict_for_nflow): the parameters in F64 or F32 and the buffers (coupling masks, MADE orders
and hidden degrees, permutations, LULinear's P and signs, ActNorm's initialised flag) in I64, with
the architecture as JSON in __metadata__ ("nflow_torch.architecture"). --cpp prints the C++ that
builds the matching nflow object.
--demo builds (and briefly trains on toy data) a small Density<StandardNormal, Flow<AffineCoupling,
Reverse, MAF, ActNorm, LULinear>>.
"""

import argparse
import inspect
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nflow_torch as nt  # noqa: E402


def demo_model(steps: int = 200) -> torch.nn.Module:
    torch.manual_seed(0)
    model = nt.Density(
        nt.StandardNormal(2),
        nt.Flow(nt.AffineCoupling(2, nt.half_mask(2), hidden_width=32, hidden_layers=2), nt.Reverse(2),
                nt.MAF(2, hidden_width=32, hidden_layers=2), nt.ActNorm(2), nt.LULinear(2)))
    # Two moons-ish toy data.
    t = torch.rand(2048) * 3.14159
    side = (torch.rand(2048) < 0.5).double()
    x = torch.stack([torch.cos(t) + side * (1 - 2 * torch.cos(t)) - 0.5 * side,
                     torch.sin(t) * (1 - 2 * side) + 0.3 * side], 1) + 0.05 * torch.randn(2048, 2)
    nt.initialize_act_norms(model, x[:512])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (256,))
        loss = -model.log_prob(x[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"demo model trained {steps} steps, nll {loss.item():.4f}", file=sys.stderr)
    return model


def load_checkpoint(path: str, pickled_module: bool) -> torch.nn.Module:
    if pickled_module:
        model = torch.load(path, map_location="cpu")
        if not isinstance(model, torch.nn.Module):
            raise SystemExit(f"{path}: not a pickled torch module")
        return model
    kwargs = {"map_location": "cpu"}
    if "weights_only" in inspect.signature(torch.load).parameters:
        kwargs["weights_only"] = True
    ckpt = torch.load(path, **kwargs)
    if not isinstance(ckpt, dict) or "nflow_torch_config" not in ckpt or "state_dict" not in ckpt:
        raise SystemExit(f"{path}: expected a dict with 'nflow_torch_config' and 'state_dict' "
                         "(or pass --pickled-module for torch.save(model))")
    config = ckpt["nflow_torch_config"]
    model = nt.from_config(json.loads(config) if isinstance(config, str) else config)
    first = next(iter(ckpt["state_dict"].values()), None)
    if first is not None and first.is_floating_point():
        model = model.to(first.dtype)
    model.load_state_dict(ckpt["state_dict"])
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="bridge checkpoint (.pt); omit with --demo")
    p.add_argument("out", help="output .safetensors file")
    p.add_argument("--dtype", choices=("f64", "f32"), default="f64")
    p.add_argument("--demo", action="store_true", help="build and train the demo model instead")
    p.add_argument("--pickled-module", action="store_true", help="CHECKPOINT is torch.save(model) (trusted files only)")
    p.add_argument("--save-checkpoint", metavar="PT", help="also write a bridge checkpoint of the model")
    p.add_argument("--cpp", action="store_true", help="print the C++ that builds the matching nflow object")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE", help="extra __metadata__ entry")
    args = p.parse_args(argv)

    torch.set_default_dtype(torch.float64)
    if args.demo == (args.checkpoint is not None):
        p.error("give either CHECKPOINT or --demo")
    model = demo_model() if args.demo else load_checkpoint(args.checkpoint, args.pickled_module)
    meta = nt.nflow_metadata(model)
    for kv in args.metadata:
        k, sep, v = kv.partition("=")
        if not sep:
            p.error(f"--metadata {kv!r}: expected KEY=VALUE")
        meta[k] = v
    tensors = nt.state_dict_for_nflow(model)
    nt.save_safetensors(tensors, args.out, args.dtype, meta)
    n_buffers = len(nt.buffers_for_nflow(model))
    print(f"wrote {args.out}: {len(tensors) - n_buffers} parameters ({args.dtype}), {n_buffers} buffers (i64)",
          file=sys.stderr)
    if args.save_checkpoint:
        torch.save({"nflow_torch_config": json.dumps(nt.to_config(model)), "state_dict": model.state_dict()}, args.save_checkpoint)
        print(f"wrote {args.save_checkpoint}", file=sys.stderr)
    if args.cpp:
        print(nt.cpp_snippet(model, "double" if args.dtype == "f64" else "float"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
