"""Per-version tables of the job fields slurmrestd reads, and what each field can grant.

Every field of a job description has a *role*: a GPU request (by unit and syntax), a node, task
or host count, whole-node exclusivity, time, array, partition -- or ``NEUTRAL``, a field known to
grant no accelerator (name, comment, environment, output paths, memory, binding hints, ...).
``DISABLED`` fields are refused by slurmrestd itself; a field a version's table does not hold is
unknown to us. Both are refused (``unmeasurable-request``), as is an unknown API version.

The field lists follow Slurm's own parsers for each version: the ``job_params`` option table of
the v0.0.37 and v0.0.38 openapi plugins (slurmrestd 21.08/22.05; keys matched without regard to
case, each key handled as the sbatch option it names, in the order given, so a repeated option --
``tasks`` then ``ntasks`` -- ends with the last), and the ``JOB_DESC_MSG`` parser of data_parser
v0.0.39 to v0.0.42 (23.02 to 24.11; exact keys). ``docs/measurement.md`` prints these tables
(``doc.render_tables``), and a test keeps the two in step.
"""

from __future__ import annotations

# Roles. GPU roles name the unit the count is per and the syntax of the value.
GPUS_JOB, GPUS_NODE, GPUS_TASK, GPUS_SOCKET = (
    "gpus",
    "gpus-per-node",
    "gpus-per-task",
    "gpus-per-socket",
)
TRES_JOB, TRES_NODE, TRES_TASK, TRES_SOCKET = (
    "tres-per-job",
    "tres-per-node",
    "tres-per-task",
    "tres-per-socket",
)
GRES = "gres"
NODES, MIN_NODES, MAX_NODES = "nodes", "minimum-nodes", "maximum-nodes"
TASKS, TASKS_PER_NODE, TASKS_PER_OTHER, TASKS_PER_GPU = (
    "ntasks",
    "ntasks-per-node",
    "ntasks-per-core/socket/board",
    "ntasks-per-gpu",
)
MIN_CPUS = "minimum-cpus"
HOSTS = "nodelist"
EXCLUSIVE, OVERSUBSCRIBE, SHARED, WHOLE, SPREAD, FLAGS = (
    "exclusive",
    "oversubscribe",
    "shared",
    "whole-node",
    "spread-job",
    "flags",
)
TIME, ARRAY, PARTITION, SCRIPT = "time", "array", "partition", "script"
FEDERATION = "federation"  # clusters other than the one behind the gate
NEUTRAL, DISABLED = "neutral", "disabled"

# What each GPU role counts per, and how its value is written.
JOB, NODE, TASK, SOCKET = "job", "node", "task", "socket"
GPU_ROLES: dict[str, tuple[str, str]] = {
    GPUS_JOB: (JOB, "gpus"),
    GPUS_NODE: (NODE, "gpus"),
    GPUS_TASK: (TASK, "gpus"),
    GPUS_SOCKET: (SOCKET, "gpus"),
    TRES_JOB: (JOB, "tres"),
    TRES_NODE: (NODE, "tres"),
    TRES_TASK: (TASK, "tres"),
    TRES_SOCKET: (SOCKET, "tres"),
    GRES: (NODE, "tres"),
}


def _table(groups: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    table = {name: role for role, names in groups.items() for name in names.split()}
    table.update(extra or {})
    return table


# v0.0.37/v0.0.38: keys (lower case) of the openapi plugin's option table, by role.
_V37: dict[str, str] = _table(
    {
        ARRAY: ("array "),
        DISABLED: (
            "accelerator_binding allocation_node_list bell burst_buffer_file cluster clusters "
            "compress contiguous cpu_binding debugger_test disable_status epilog excluded_nodes "
            "export export_file extra_node_info group_id help hetjob_group ignore_pbs immediate "
            "job_id kill_command kill_on_bad_exit label max_threads message_timeout mpi "
            "multiple_program network no_allocation no_bell no_shell nodefile overcommit "
            "oversubscribe parsable power_flags preserve_environment prolog propagate pty quiet "
            "quit_on_interrupt reboot relative required_nodes required_switches reserve_port "
            "reserve_ports slurmd_debug task_epilog task_prolog threads unbuffered "
            "unknown usage user_id verbose version wait wait_for_switch wrap x11 "
        ),
        EXCLUSIVE: ("exclusive "),
        GPUS_JOB: ("gpus "),
        GPUS_NODE: ("gpus_per_node "),
        GPUS_SOCKET: ("gpus_per_socket "),
        GPUS_TASK: ("gpus_per_task "),
        GRES: ("gres "),
        HOSTS: ("node_list nodelist "),
        NEUTRAL: (
            "account account_gather_frequency argv batch_features begin_time burst_buffer "
            "comment constraint constraints cores_per_socket "
            "cpu_frequency cpus_per_gpu cpus_per_task current_working_directory cwd deadline "
            "delay_boot dependency distribution environment exclude_nodes get_user_environment "
            "gpu_binding gpu_frequency gres_flags hold job_name kill_on_invalid_dependency "
            "license licenses mail_type mail_user memory_binding memory_per_cpu memory_per_gpu "
            "memory_per_node minimum_cpus_per_node minimum_nodes msc_label name nice no_kill "
            "no_requeue open_mode priority profile qos requeue reservation signal "
            "sockets_per_node standard_error standard_input standard_output "
            "temporary_disk_per_node test_only threads_per_core umask wait_all_nodes "
            "wckey "
        ),
        NODES: ("nodes "),
        PARTITION: ("partition "),
        SPREAD: ("spread_job "),
        TASKS: ("ntasks tasks "),
        TASKS_PER_GPU: ("ntasks_per_gpu ntasks_per_tres "),
        TASKS_PER_NODE: ("ntasks_per_node tasks_per_node "),
        TASKS_PER_OTHER: ("ntasks_per_core ntasks_per_socket tasks_per_core tasks_per_socket "),
        TIME: ("time_limit "),
        WHOLE: ("core_specification thread_specification "),
    }
)
# The two keys of v0.0.37 spelled with a space in Slurm's table.
_V37.update(dict.fromkeys(("cpu_binding hint", "time minimum"), NEUTRAL))
_V37["cluster_constraint"] = FEDERATION

# v0.0.38: v0.0.37's table with its misspelt keys corrected, oversubscribe enabled, and the
# fields of Slurm 22.05 added.
_V38 = {
    **{k: v for k, v in _V37.items() if k not in ("cpu_binding hint", "msc_label", "time minimum")},
    "oversubscribe": OVERSUBSCRIBE,
    **dict.fromkeys(
        ("container", "cpu_binding_hint", "mcs_label", "prefer", "time_minimum"), NEUTRAL
    ),
}

# v0.0.39 to v0.0.42: the fields of data_parser's JOB_DESC_MSG. Fields not named here are NEUTRAL.
_DATA_PARSER_ROLES = {
    "tres_per_job": TRES_JOB,
    "tres_per_node": TRES_NODE,
    "tres_per_task": TRES_TASK,
    "tres_per_socket": TRES_SOCKET,
    "nodes": NODES,
    "minimum_nodes": MIN_NODES,
    "maximum_nodes": MAX_NODES,
    "tasks": TASKS,
    "tasks_per_node": TASKS_PER_NODE,
    "tasks_per_socket": TASKS_PER_OTHER,
    "tasks_per_core": TASKS_PER_OTHER,
    "tasks_per_board": TASKS_PER_OTHER,
    "ntasks_per_tres": TASKS_PER_GPU,
    "minimum_cpus": MIN_CPUS,
    "required_nodes": HOSTS,
    "shared": SHARED,
    "exclusive": EXCLUSIVE,
    "oversubscribe": OVERSUBSCRIBE,
    "core_specification": WHOLE,
    "thread_specification": WHOLE,
    "flags": FLAGS,
    "time_limit": TIME,
    "array": ARRAY,
    "partition": PARTITION,
    "script": SCRIPT,
    "clusters": FEDERATION,
    "cluster_constraint": FEDERATION,
}

_F39 = (
    "environment account account_gather_frequency admin_comment allocation_node_list "
    "allocation_node_port "
    "argv array batch_features begin_time burst_buffer cluster_constraint clusters comment "
    "constraints container container_id contiguous core_specification cpu_binding "
    "cpu_binding_flags cpu_frequency cpus_per_task cpus_per_tres crontab "
    "current_working_directory deadline delay_boot dependency distribution "
    "distribution_plane_size end_time excluded_nodes exclusive extra flags group_id "
    "hetjob_group hold immediate job_id kill_on_node_fail kill_warning_delay "
    "kill_warning_flags kill_warning_signal licenses mail_type mail_user maximum_cpus "
    "maximum_nodes mcs_label memory_binding memory_binding_type memory_per_cpu "
    "memory_per_node memory_per_tres minimum_boards_per_node minimum_cpus "
    "minimum_cpus_per_node minimum_nodes minimum_sockets_per_board name network nice nodes "
    "ntasks_per_tres open_mode overcommit oversubscribe partition power_flags prefer priority "
    "profile qos reboot requeue required_nodes required_switches reservation reserve_ports "
    "script selinux_context shared site_factor sockets_per_node spank_environment "
    "standard_error standard_input standard_output tasks tasks_per_board tasks_per_core "
    "tasks_per_node tasks_per_socket temporary_disk_per_node thread_specification "
    "threads_per_core time_limit time_minimum tres_bind tres_freq tres_per_job tres_per_node "
    "tres_per_socket tres_per_task user_id wait_all_nodes wait_for_switch wckey x11 "
    "x11_magic_cookie x11_target_host x11_target_port "
)
# Each later version as its changes to the one before (as Slurm's parsers differ).
_F40 = (
    _F39 + "cores_per_socket rlimits/as rlimits/core rlimits/cpu rlimits/data "
    "rlimits/fsize rlimits/memlock rlimits/nofile rlimits/nproc rlimits/rss rlimits/stack "
)
_F41 = _F40.replace(" cores_per_socket ", " ") + "resv_mpi_ports segment_size "
_F42 = (
    _F41.replace(" exclusive ", " ")
    .replace(" oversubscribe ", " ")
    .replace(" resv_mpi_ports ", " ")
    + "oom_kill_step "
)


def _data_parser(fields: str) -> dict[str, str]:
    # ``rlimits/cpu`` and its siblings are members of one object field, ``rlimits``
    return {name.split("/")[0]: _DATA_PARSER_ROLES.get(name, NEUTRAL) for name in fields.split()}


# Field tables by API version; each version's key handling beside it.
VERSIONS: dict[str, dict[str, str]] = {
    "v0.0.37": _V37,
    "v0.0.38": _V38,
    "v0.0.39": _data_parser(_F39),
    "v0.0.40": _data_parser(_F40),
    "v0.0.41": _data_parser(_F41),
    "v0.0.42": _data_parser(_F42),
}
# Versions whose plugin reads keys without regard to case, in body order, the last repeat winning,
# and takes ``job`` (a job or a list of them) before ``jobs``.
OPTION_STYLE = frozenset({"v0.0.37", "v0.0.38"})

# job flags (v0.0.39+ ``flags``) that change how many nodes a job spreads over; the rest of the
# flags data_parser knows change no count.
SPREAD_FLAGS = frozenset({"SPREAD_JOB"})
KNOWN_FLAGS = frozenset(
    [
        "KILL_INVALID_DEPENDENCY",
        "NO_KILL_INVALID_DEPENDENCY",
        "HAS_STATE_DIRECTORY",
        "TESTING_BACKFILL",
        "GRES_BINDING_ENFORCED",
        "TEST_NOW_ONLY",
        "SEND_JOB_ENVIRONMENT",
        "SPREAD_JOB",
        "PREFER_MINIMUM_NODE_COUNT",
        "JOB_KILL_HURRY",
        "SKIP_TRES_STRING_ACCOUNTING",
        "SIBLING_CLUSTER_UPDATE_ONLY",
        "HETEROGENEOUS_JOB",
        "EXACT_TASK_COUNT_REQUESTED",
        "EXACT_CPU_COUNT_REQUESTED",
        "TESTING_WHOLE_NODE_BACKFILL",
        "TOP_PRIORITY_JOB",
        "ACCRUE_COUNT_CLEARED",
        "GRES_BINDING_DISABLED",
        "JOB_WAS_RUNNING",
        "JOB_ACCRUE_TIME_RESET",
        "CRON_JOB",
        "EXACT_MEMORY_REQUESTED",
        "USING_DEFAULT_ACCOUNT",
        "USING_DEFAULT_PARTITION",
        "USING_DEFAULT_QOS",
        "USING_DEFAULT_WCKEY",
        "DEPENDENT",
        "MAGNETIC",
        "PARTITION_ASSIGNED",
        "BACKFILL_ATTEMPTED",
        "SCHEDULING_ATTEMPTED",
        "STEPMGR_ENABLED",
    ]
)

# sbatch's options (long names, by argument kind; short letters), as its option table lists them.
_NO_ARG = (
    "contiguous help hold ignore-pbs no-requeue overcommit oversubscribe parsable quiet "
    "reboot requeue spread-job stepmgr test-only usage use-min-nodes verbose version wait "
)
_REQUIRED_ARG = (
    "account acctg-freq array autocomplete batch bb bbf begin chdir cluster "
    "cluster-constraint clusters comment constraint container container-id context "
    "core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot "
    "dependency distribution error exclude export export-file extra extra-node-info gid "
    "gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags "
    "hint input job-name kill-on-invalid-dep licenses mail-type mail-user mcs-label mem "
    "mem-bind mem-per-cpu mem-per-gpu mincpus network nodefile nodelist nodes ntasks "
    "ntasks-per-core ntasks-per-gpu ntasks-per-node ntasks-per-socket ntasks-per-tres "
    "open-mode output partition prefer priority profile qos reservation segment signal "
    "sockets-per-node switches tasks-per-node thread-spec threads-per-core time time-min "
    "tmp tres-bind tres-per-task uid wait-all-nodes wckey wrap "
)
_OPTIONAL_ARG = "exclusive get-user-env nice no-kill oom-kill-step propagate resv-ports "
SBATCH_SHORT = {
    "A": "account",
    "B": "extra-node-info",
    "C": "constraint",
    "D": "chdir",
    "F": "nodefile",
    "G": "gpus",
    "H": "hold",
    "J": "job-name",
    "L": "licenses",
    "M": "clusters",
    "N": "nodes",
    "O": "overcommit",
    "Q": "quiet",
    "S": "core-spec",
    "V": "version",
    "W": "wait",
    "a": "array",
    "b": "begin",
    "c": "cpus-per-task",
    "d": "dependency",
    "e": "error",
    "h": "help",
    "i": "input",
    "k": "no-kill",
    "m": "distribution",
    "n": "ntasks",
    "o": "output",
    "p": "partition",
    "q": "qos",
    "s": "oversubscribe",
    "t": "time",
    "v": "verbose",
    "w": "nodelist",
    "x": "exclude",
}
SBATCH_ARGS: dict[str, int] = {
    **{name: 0 for name in _NO_ARG.split()},
    **{name: 1 for name in _REQUIRED_ARG.split()},
    **{name: 2 for name in _OPTIONAL_ARG.split()},
}
SBATCH_ROLES: dict[str, str] = {
    "gpus": GPUS_JOB,
    "gpus-per-node": GPUS_NODE,
    "gpus-per-task": GPUS_TASK,
    "gpus-per-socket": GPUS_SOCKET,
    "tres-per-task": TRES_TASK,
    "gres": GRES,
    "nodes": NODES,
    "ntasks": TASKS,
    "ntasks-per-node": TASKS_PER_NODE,
    "tasks-per-node": TASKS_PER_NODE,
    "ntasks-per-core": TASKS_PER_OTHER,
    "ntasks-per-socket": TASKS_PER_OTHER,
    "ntasks-per-gpu": TASKS_PER_GPU,
    "ntasks-per-tres": TASKS_PER_GPU,
    "nodelist": HOSTS,
    "nodefile": DISABLED,  # a file on the submitting host: its hosts cannot be counted here
    "exclusive": EXCLUSIVE,
    "oversubscribe": OVERSUBSCRIBE,
    "core-spec": WHOLE,
    "thread-spec": WHOLE,
    "spread-job": SPREAD,
    "time": TIME,
    "array": ARRAY,
    "partition": PARTITION,
    "clusters": FEDERATION,
    "cluster": FEDERATION,
    "cluster-constraint": FEDERATION,
}


def role_of_option(name: str) -> str:
    """The role of sbatch option ``name`` (a full long name): ``NEUTRAL`` when it grants nothing."""
    return SBATCH_ROLES.get(name, NEUTRAL)
