"""The results of :func:`byol.bench.run_bench` as a plain-text table."""

from __future__ import annotations

from typing import Any

__all__ = ["format_table"]


def format_table(result: dict[str, Any]) -> str:
    """The results of :func:`run_bench` as a plain-text table."""
    config = result["config"]
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['threads']} threads"
    rows: list[tuple[str, str]] = [
        ("setup", f"{config['arch']} {config['image_size']} px, batch {config['batch_size']}, "
                  f"{result.get('precision', config['precision'])}, "
                  f"compile {'on' if config['compile'] else 'off'}, "
                  f"channels_last {'on' if config['channels_last'] else 'off'}"),
        ("device", f"{machine['device']} ({where}), torch {machine['torch']}"),
        ("throughput", f"{result['images_per_s']:.1f} images/s (median of "
                       f"{len(result['images_per_s_windows'])} windows: "
                       + ", ".join(f"{r:.1f}" for r in result["images_per_s_windows"]) + ")"),
        ("step", f"{result['step_ms']:.1f} ms (warm-up {result['warmup_s']:.1f} s)"),
    ]  # fmt: skip
    if config["ema"] != "foreach" or config["lars"] != "foreach" or config["sync_every_step"]:
        rows.append(("variant", f"ema {config['ema']}, lars {config['lars']}, sync every step "
                                f"{'on' if config['sync_every_step'] else 'off'}"))  # fmt: skip
    if result.get("system_ms_per_step") is not None:
        rows.append((
            "host per step",
            f"{result['user_ms_per_step']:.0f} ms user, {result['system_ms_per_step']:.0f} ms "
            f"system CPU time, {result['page_faults_per_step']:.0f} page faults "
            f"(keep freed memory: {result['keep_freed_memory']})",
        ))  # fmt: skip
    if result.get("stages_ms"):
        total = result["stages_sum_ms"] or 1.0
        for stage, ms in result["stages_ms"].items():
            rows.append((f"  {stage}", f"{ms:8.2f} ms  {100 * ms / total:5.1f}%"))
        rows.append(("  sum of stages", f"{result['stages_sum_ms']:8.2f} ms"))
    if result.get("flops_per_image") is not None:
        rows.append(("work", f"{result['flops_per_image'] / 1e6:.1f} MFLOP per image per step"))
        rows.append(("achieved", f"{result['achieved_gflops']:.1f} GFLOP/s"))
    if result.get("matmul_gflops"):
        rows.append(
            (
                "matmul",
                ", ".join(f"{k} {v:.1f}" for k, v in result["matmul_gflops"].items()) + " GFLOP/s",
            )
        )
        rows.append(
            (
                "conv 3x3",
                ", ".join(f"{k} {v:.1f}" for k, v in result["conv3x3_gflops"].items()) + " GFLOP/s",
            )
        )
        rows.append(("ceiling", f"{result['ceiling_gflops']:.1f} GFLOP/s"))
    if result.get("fraction_of_ceiling") is not None:
        rows.append(("of ceiling", f"{100 * result['fraction_of_ceiling']:.1f}%"))
    step_conv = result.get("step_conv_fwd_bwd_gflops")
    if step_conv and result.get("achieved_gflops") is not None:
        rows.append(("step's convs", f"{step_conv:.1f} GFLOP/s forward + backward at its own "
                     f"shapes; the step achieves {100 * result['achieved_gflops'] / step_conv:.0f}%"
                     " of it"))  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if result.get("profile"):
        lines += ["", result["profile"]]
    return "\n".join(lines)
