"""Text renderings of REST answers: progress, job lists, ``job stat`` and the report.

Pure: a dict in, a string out. The CLI prints them and the REST API serves the same
text (``format=TEXT``), so they live here, below both.
"""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

from alluxiojob.config.units import format_duration, format_size
from alluxiojob.core.reasons import Reason

VERBS = {"LOAD": "loading", "FREE": "freeing", "COPY": "copying", "MOVE": "moving"}


def _hms(seconds: float) -> str:
    total = int(seconds)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def progress_text(report: dict[str, Any], verbose: bool = False) -> str:
    job = report["job"]
    options = job["options"]
    files, nbytes = report["files"], report["bytes"]
    total_known = report["total_known"]
    bandwidth = options.get("bandwidth") or 0
    lines = [
        f"Progress for {VERBS.get(job['type'], job['type'].lower())} path '{job['path']}'"
        + (f" to '{job['dst']}'" if job.get("dst") else "") + ":",
        f"\tSettings:\tbandwidth: {format_size(bandwidth) + '/s' if bandwidth else 'unlimited'}"
        f"\tverify: {str(options['verify']).lower()}"
        f"\tskip-if-exists: {str(options['skip_if_exists']).lower()}"
        f"\tmetadata-only: {str(options.get('metadata_only', False)).lower()}"
        f"\treplicas: {options['replicas']}"
        f"\tbatch size: {options['batch_size'] or 'default'}",
        f"\tJob Id: {job['id']}",
        f"\tTime Elapsed: {_hms(report['elapsed_seconds'])}",
        f"\tJob State: {job['state']}" + (f", error: {job['error']}" if job.get("error") else ""),
    ]
    listed = files["listed"]
    of_files = (f" out of {files.get('total', listed)}" if total_known
                else f" (listed so far: {listed})")
    bytes_known = total_known and (report["progress"].get("listing_done")
                                   or report["progress"].get("bytes_total"))
    total_bytes = nbytes.get("total", nbytes["listed"])
    of_bytes = f" out of {format_size(total_bytes)}" if bytes_known else ""
    lines += [
        f"\tFiles Processed: {files['processed']}{of_files}",
        f"\tBytes {'Freed' if job['type'] == 'FREE' else 'Loaded'}: "
        f"{format_size(nbytes['processed'])}{of_bytes}",
    ]
    if options.get("skip_if_exists") or files["skipped"]:
        lines.append(f"\tFiles Skipped: {files['skipped']}")
        lines.append(f"\tBytes Skipped: {format_size(nbytes['skipped'])}")
    lines.append(
        f"\tThroughput: {format_size(report['throughput_avg'])}/s average, "
        f"{format_size(report['throughput_recent'])}/s recent"
    )
    if report.get("eta_seconds") is not None:
        lines.append(f"\tETA: {format_duration(report['eta_seconds'])}")
    if report.get("verify_passes"):
        lines.append(f"\tVerify Passes: {report['verify_passes']}, "
                     f"Files Repaired: {report['files_repaired']}")
    lines += [
        f"\tFile Failure Rate: {report['file_failure_ratio'] * 100:.2f}%",
        f"\tSubtask Failures: {report['subtask_failures']}",
        f"\tFiles Failed: {files['failed']}",
    ]
    if report.get("workers") and verbose:
        lines.append(f"\tWorkers: {', '.join(report['workers'])}")
    if verbose:
        lines += ["\t" + line for line in _shard_lines(report.get("shards") or [])]
    successes = report.get("successes")
    if successes is not None:
        lines.append(f"\tCached files ({len(successes)} shown):")
        for item in successes:
            if item.get("error"):
                lines.append(f"\t\tworker {item['worker']} unreachable: {item['error']}")
            else:
                lines.append(f"\t\t{item['path']}\t{format_size(item['bytes'])}\t"
                             f"on {item['worker']}")
    failures = report.get("failures")
    if failures:
        lines.append(f"\tFailure Reasons: {_reason_counts(failures)}")
        lines.append("\tFailed files:" if not verbose else "\tRecent failures:")
        for failure in failures:
            lines.append(f"\t\t{failure['path']}\tReason: {failure['reason']}, "
                         f"message: {failure['message']}")
    return "\n".join(lines)


def _reason_counts(failures: list[dict[str, Any]]) -> str:
    """``CACHE_FULL 2, IO_ERROR 1 (retried)``: how many of the listed files failed why."""
    counts = Counter(str(f.get("reason", "")) for f in failures)
    parts = []
    for name, count in sorted(counts.items()):
        try:
            retried = Reason.parse(name).retryable
        except ValueError:  # a coordinator newer than this CLI
            retried = False
        parts.append(f"{name} {count}" + (" (retried)" if retried else ""))
    return ", ".join(parts)


def _time(ts: float) -> str:
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%m-%d-%Y %H:%M:%S")


def job_list_text(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "No jobs."
    rows = [("ID", "TYPE", "STATE", "PATH", "OWNER", "SUBMITTED")]
    for job in jobs:
        path = job["path"] + (f" -> {job['dst']}" if job.get("dst") else "")
        rows.append((job["id"], job["type"], job["state"], path, job.get("owner") or "-",
                     _time(job["created_at"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
                     for row in rows)


def job_stat_text(job: dict[str, Any], report: dict[str, Any] | None, verbose: bool) -> str:
    lines = [
        f"ID: {job['id']}",
        f"Name: {job['type']}",
        f"Description: {job['type']} path={job['path']}" + (f" dst={job['dst']}" if job.get("dst")
                                                            else "")
        + f" options={job['options']}",
        f"Status: {job['state']}",
        f"Owner: {job.get('owner') or '-'}",
        f"Submitted: {_time(job['created_at'])}  Started: {_time(job['started_at'])}  "
        f"Finished: {_time(job['finished_at'])}",
    ]
    if job.get("error"):
        lines.append(f"Error: {job['error']}")
    if verbose and report is not None:
        if report.get("workers"):
            lines.append(f"Workers: {', '.join(report['workers'])}")
        files = report["files"]
        lines.append(f"Files: processed {files['processed']}, skipped {files['skipped']}, "
                     f"failed {files['failed']}")
        lines += _shard_lines(report.get("shards") or [])
        lines += _task_lines(report.get("tasks") or [])
    return "\n".join(lines)


def _shard_lines(shards: list[dict[str, Any]]) -> list[str]:
    """Each shard of a sharded job with its state, owner and counts."""
    return [f"Shard {s['index']}: {s['state']:<7} Owner: {s['owner'] or '-'}  "
            f"Files: listed {s['files_listed']}, processed {s['files_processed']}, "
            f"skipped {s['files_skipped']}, failed {s['files_failed']}" for s in shards]


def _task_lines(tasks: list[dict[str, Any]]) -> list[str]:
    """Each recent task with its worker and status, as Alluxio 2.x's ``job stat -v``."""
    lines = []
    for task in tasks:
        failed = f" ({task['files_failed']} failed)" if task.get("files_failed") else ""
        lines += [
            f"Task {task['task']}",
            f"\tWorker: {task['worker']}",
            f"\tStatus: {task['status']}",
            f"\tFiles: {task['files']}{failed}",
        ]
        started, ended = task.get("started_at") or 0.0, task.get("ended_at") or 0.0
        timing = f"\tStarted: {_time(started)}"
        if ended:
            timing += f"  Took: {format_duration(max(0.0, ended - started))}"
        lines.append(timing)
        if task.get("error"):
            lines.append(f"\tError: {task['error']}")
    return lines


def report_text(report: dict[str, Any]) -> str:
    lines = []
    for w in report["workers"]:
        if "error" in w:
            lines.append(f"Worker: {w['worker']}  UNREACHABLE ({w['error']})")
            continue
        load = ", ".join(f"{x:.2f}" for x in w["load_avg"])
        cap = format_size(w["cache_capacity"]) if w["cache_capacity"] else "unlimited"
        lines.append(
            f"Worker: {w['worker']}  Task Pool Size: {w['pool_size']:<4} "
            f"Unfinished Tasks: {w['unfinished_tasks']:<6} Active Tasks: {w['active_tasks']:<4} "
            f"Load Avg: {load}  Cache: {format_size(w['cache_used'])} of {cap}, "
            f"{w['cached_files']} files"
        )
    lines.append("")
    for state, count in report["counts"].items():
        lines.append(f"Status: {state:<10} Count: {count}")
    for title, key in (("10 Most Recently Modified Jobs:", "recently_modified"),
                       ("10 Most Recently Failed Jobs:", "recently_failed"),
                       ("10 Longest Running Jobs:", "longest_running")):
        lines += ["", title]
        for job in report[key]:
            lines.append(f"Timestamp: {_time(job['updated_at'])}  Id: {job['id']}  "
                         f"Name: {job['type']:<5} Path: {job['path']}  Status: {job['state']}")
    return "\n".join(lines)
