"""Beam import noise and runner options."""
import logging
import subprocess
import sys

from beam_jobs.beam_env import DEFAULT_RUNNER, pipeline_options, runner_name


def test_importing_beam_jobs_prints_no_beam_warnings():
    code = "import beam_jobs, logging; logging.warning('still visible')"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "apitools" not in err and "still visible" in err


def test_only_the_two_known_messages_are_dropped(caplog):
    with caplog.at_level(logging.WARNING):
        logging.warning("apitools not found, and bigquery client libraries are not available")
        logging.warning("Resource module is not available for current platform, memory usage cannot be fetched.")
        logging.warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def test_pipeline_options_always_name_a_runner_and_keep_explicit_args():
    assert runner_name(pipeline_options(None)) == DEFAULT_RUNNER == "DirectRunner"
    opts = pipeline_options(["--runner=FlinkRunner", "--flink_master=host:8081"], direct_num_workers=2)
    assert runner_name(opts) == "FlinkRunner" and opts.get_all_options()["flink_master"] == "host:8081"
    opts = pipeline_options(["--direct_num_workers", "3", "--default_sdk_harness_log_level", "INFO"],
                            direct_num_workers=2)
    assert opts.get_all_options()["direct_num_workers"] == 3
    assert opts.get_all_options()["default_sdk_harness_log_level"] == "INFO"
    assert pipeline_options([]).get_all_options()["default_sdk_harness_log_level"] == "WARNING"
