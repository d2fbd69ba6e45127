"""Keep cloud credentials out of what Ray records: trials find them in their node's environment.

Why this exists: Ray Tune copies the driver's ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` / ``AWS_SECURITY_TOKEN`` into the ``runtime_env.env_vars`` of every trainable
actor (``ray/tune/execution/class_cache.py``, ``ENV_VARS_TO_PROPAGATE``), and Ray's runtime-env
agent logs every runtime env in plain text (``<session>/logs/runtime_env_agent.log``, readable by
anyone who can read the session folder). mcscale's trials do not need the copy:

* embedded Ray: the raylet was started by this process and its workers inherit its environment;
* a cluster: each node has its own credentials (its environment, an instance role, a Kubernetes
  Secret loaded with ``envFrom``; see cluster/kuberay/secret.yaml), resolved by pyarrow's and
  boto3's default credential chains where the trial runs.

So the driver takes those names out of Tune's propagation list before any trial starts. The list
is a private constant of Ray; when it is missing or not a set (another Ray version), nothing is
changed and `credentials_propagated()` says so, which the secrets test checks.
"""

from __future__ import annotations

CREDENTIAL_ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def _tune_propagation_list():
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # pragma: no cover - a Ray without Tune's class cache
        return None
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    return names if isinstance(names, set) else None


def keep_credentials_out_of_ray() -> None:
    """Stop Ray Tune from copying the driver's AWS credentials into trial runtime envs (idempotent)."""
    names = _tune_propagation_list()
    if names is not None:
        names.difference_update(CREDENTIAL_ENV_VARS)


def credentials_propagated() -> list[str]:
    """The credential variables Ray Tune would still copy into trial runtime envs."""
    names = _tune_propagation_list()
    if names is None:
        return []
    return sorted(set(CREDENTIAL_ENV_VARS) & names)
