# Part of apimon (written by `apimon executor` next to its run directories;
# do not edit). Records every task of a scenario run and a summary of the
# playbook as InfluxDB line protocol in the run's directory; the executor
# tags the points with the run (environment, scenario, job id) and sends
# them with the run's result. Measurements and tags: docs/metrics.md.
#
# It also names the task going on in the run's openstacksdk metrics
# configuration (OS_CLIENT_SECURE_FILE, written by the executor), so the
# API requests of a task tagged `az=…` / `metric=…` carry those tags.
#
# Outside a run of `apimon executor` (no APIMON_RUN_DIR) it does nothing.

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: apimon_tasks
    type: aggregate
    short_description: records each task of an apimon scenario run
    description:
      - Appends one apimon_task point per task and host, and one
        apimon_playbook point per playbook, to $APIMON_RUN_DIR/tasks.lp.
"""

# Task tags of the form key=value that become point tags (APImon scenarios
# tag tasks like `metric=create_server`, `az=eu-de-01`, `service=compute`).
TAG_KEYS = ("metric", "az", "service")
MAX_MESSAGE = 512


def _tag(value):
    text = str(value).replace("\n", " ").replace("\r", " ")
    out = []
    for c in text:
        if c in ", =\\":
            out.append("\\")
        out.append(c)
    return "".join(out) or "-"


def _string(value):
    text = str(value)[:MAX_MESSAGE]
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "") + '"'


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "apimon_tasks"
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        run_dir = os.environ.get("APIMON_RUN_DIR")
        self.path = os.path.join(run_dir, "tasks.lp") if run_dir else None
        self.playbook = "-"
        self.play = "-"
        self.started_ns = time.time_ns()
        self.task_started = {}
        # The run's openstacksdk metrics configuration, when the executor wrote one.
        self.metrics_file = None
        secure = os.environ.get("OS_CLIENT_SECURE_FILE", "")
        if run_dir and os.path.dirname(secure) == run_dir:
            try:
                with open(secure, encoding="utf-8") as source:
                    self.metrics_config = json.load(source)
                self.run_database = self.metrics_config["metrics"]["influxdb"]["database"]
                self.metrics_file = secure
            except (OSError, ValueError, KeyError, TypeError):
                self.metrics_file = None

    def _write(self, line):
        if not self.path:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as error:
            self._display.warning("apimon_tasks: cannot write %s: %s" % (self.path, error))
            self.path = None

    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.basename(getattr(playbook, "_file_name", "") or "-")
        self.started_ns = time.time_ns()

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name().strip() or "-"

    def _task_tags(self, task):
        tags = {}
        for item in task.tags or []:
            key, sep, value = str(item).partition("=")
            if sep and key in TAG_KEYS and value:
                tags[key] = value
        return tags

    def _name_task_in_metrics(self, task):
        if not self.metrics_file:
            return
        tags = self._task_tags(task)
        database = self.run_database + "".join(
            ";%s=%s" % (key, tags[key].replace(";", "_")) for key in ("az", "metric") if key in tags
        )
        self.metrics_config["metrics"]["influxdb"]["database"] = database
        temporary = self.metrics_file + ".tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                json.dump(self.metrics_config, out)
            os.replace(temporary, self.metrics_file)
        except OSError as error:
            self._display.warning("apimon_tasks: cannot write %s: %s" % (self.metrics_file, error))
            self.metrics_file = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.task_started[task._uuid] = time.time_ns()
        self._name_task_in_metrics(task)

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def v2_playbook_on_cleanup_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _record(self, result, state):
        task = result._task
        now = time.time_ns()
        started = self.task_started.get(task._uuid, now)
        tags = {
            "playbook": self.playbook,
            "play": self.play,
            "task": task.get_name().strip() or task.action,
            "action": task.action,
            "state": state,
            "host": result._host.get_name(),
        }
        tags.update(self._task_tags(task))
        fields = ["duration_ms=%di" % ((now - started) // 1_000_000)]
        if state in ("failed", "failed_ignored", "unreachable"):
            message = result._result.get("msg") or result._result.get("stderr") or ""
            if message:
                fields.append("message=" + _string(message))
        series = ",".join("%s=%s" % (k, _tag(v)) for k, v in sorted(tags.items()))
        self._write("apimon_task,%s %s %d" % (series, ",".join(fields), now))

    def v2_runner_on_ok(self, result):
        self._record(result, "changed" if result._result.get("changed") else "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed_ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        totals = dict(ok=0, changed=0, failures=0, unreachable=0, skipped=0, rescued=0, ignored=0)
        for host in sorted(stats.processed.keys()):
            summary = stats.summarize(host)
            for key in totals:
                totals[key] += int(summary.get(key, 0))
        now = time.time_ns()
        result = "failed" if totals["failures"] or totals["unreachable"] else "passed"
        fields = [
            "changed=%di" % totals["changed"],
            "duration_ms=%di" % ((now - self.started_ns) // 1_000_000),
            "failed=%di" % totals["failures"],
            "ignored=%di" % totals["ignored"],
            "ok=%di" % totals["ok"],
            "rescued=%di" % totals["rescued"],
            "skipped=%di" % totals["skipped"],
            "unreachable=%di" % totals["unreachable"],
        ]
        self._write(
            "apimon_playbook,playbook=%s,result=%s %s %d"
            % (_tag(self.playbook), result, ",".join(fields), now)
        )
