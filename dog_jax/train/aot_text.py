"""The AOT report's words: its console lines and the one line train.py exits with when the batch does not fit."""

from __future__ import annotations

from typing import Any

from dog_jax.train import hlo_bytes


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.1f} MiB"


def _refusal(report: dict[str, Any]) -> str | None:
    """XLA's out-of-HBM message when it refused to compile the train step, else None."""
    return report["train_step"].get("out_of_memory")


def format_report(report: dict[str, Any]) -> list[str]:
    """The console lines of a report."""
    lines = [
        f"AOT {report['model']} on {report['topology']} ({report['num_devices']} x {report['device_kind']}, "
        f"{report['num_hosts']} host(s)): global batch {report['global_batch']} = {report['per_device_batch']} per "
        f"device{_micro_batches(report)}, {report['precision']}{', remat' if report['remat'] else ''}",
        f"  memory per device {'more than ' if _refusal(report) else ''}{_size(report['total_bytes'])} "
        f"of {_size(report['hbm_bytes_per_device'])}: {'fits' if report['fits'] else 'DOES NOT FIT'} "
        f"(margin {report['margin_fraction']:.0%}) = compiled step {_size(report['compiled_bytes'])} + "
        f"{report['input_batches_on_device'] - 1} more batch(es) on the device {_size(report['input_buffer_bytes'])} "
        f"+ reserve {_size(report['reserve_bytes'])}",
    ]
    if _refusal(report):
        lines.append(f"  train step not compiled, XLA: {_refusal(report)}")
    else:
        lines.append(f"  train step per device: collectives {report['collectives'] or 'none'}; dog_jax custom calls "
                     f"{report['dog_jax_custom_calls']}; HLO bytes by op: "
                     f"{hlo_bytes.summary_line(report['bytes_by_category_per_step_per_device'])}")
        if report["roofline_step_seconds"] is None:
            lines.append("  no cost analysis from XLA for this target: no FLOPs, no roofline estimate")
        else:
            lines += [
                f"  {report['flops_per_step_per_device'] / 1e9:.1f} GFLOP, "
                f"{report['bytes_accessed_per_step_per_device'] / 1e9:.1f} GB accessed (XLA's cost model"
                + (f": {report['grad_accum_steps']} x the step at the micro-batch" if report.get("micro_batch_step")
                   else "") + ")",
                f"  roofline estimate {report['roofline_step_seconds'] * 1e3:.1f} ms/step"
                + (f", {report['roofline_epoch_seconds'] / 60:.1f} min/epoch, "
                   f"{report['roofline_run_seconds'] / 3600:.2f} h for {report['num_epochs']:g} epochs"
                   if "roofline_epoch_seconds" in report else "") + " (not a measured speed)"]
    lines.append(f"  compile {report['compile_seconds']:.0f} s ("
                 f"{'train + eval step' if report['eval_step'] else 'train step; eval step not compiled: no fit'}"
                 f"{' + the step at the micro-batch, for the costs' if report.get('micro_batch_step') else ''})")
    if "largest_fitting_per_device_batch" in report:
        lines.append(f"  largest per-device batch that fits: {report['largest_fitting_per_device_batch']} (searched "
                     f"by {len(report['probed_memory_bytes']) - 1} more compiles, "
                     f"{report['search_compile_seconds']:.0f} s)")
    if "smallest_fitting_grad_accum_steps" in report:
        lines.append(f"  {_accumulation(report)} (searched by {len(report['grad_accum_probed_memory_bytes'])} "
                     f"compiles, {report['grad_accum_search_compile_seconds']:.0f} s)")
    return lines


def _micro_batches(report: dict[str, Any]) -> str:
    k = report.get("grad_accum_steps", 1)  # reports written before accumulation existed have none
    return f" in {k} micro-batches of {report['micro_batch_per_device']}" if k > 1 else ""


def _accumulation(report: dict[str, Any]) -> str:
    """What the accumulation search found, as a phrase."""
    k = report["smallest_fitting_grad_accum_steps"]
    if k is None:
        return f"no grad_accum_steps makes global batch {report['global_batch']} fit"
    return (f"global batch {report['global_batch']} fits with --config.grad_accum_steps={k} (micro-batches of "
            f"{report['per_device_batch'] // k} per device)")


def too_big(report: dict[str, Any]) -> str | None:
    """None if the report's batch fits, else the one line naming the largest per-device batch that fits and the
    smallest gradient accumulation at which the batch fits."""
    if report["fits"]:
        return None
    largest = report["largest_fitting_per_device_batch"]
    plain = " --config.grad_accum_steps=1" if report.get("grad_accum_steps", 1) > 1 else ""
    remedy = (f"the largest per-device batch that fits is {largest} (--config.batch_size="
              f"{largest * report['num_devices']}{plain})" if largest else "not even 8 per device fits")
    if report.get("smallest_fitting_grad_accum_steps"):
        remedy += f"; the batch fits with --config.grad_accum_steps={report['smallest_fitting_grad_accum_steps']}"
    needs = (f"needs more than {report['memory_bytes_per_device'] / 2**30:.2f} GiB per device (XLA refused to "
             "compile it: out of HBM)" if _refusal(report) else
             f"needs {report['total_bytes'] / 2**30:.2f} GiB per device with its input batches and the reserve")
    return (f"global batch {report['global_batch']} ({report['per_device_batch']} per device) {needs}, more than the "
            f"{report['hbm_bytes_per_device'] / 2**30:.0f} GiB of a {report['device_kind']} chip; {remedy}"
            f"{'' if report['remat'] else ', or add --config.remat=true'}")
