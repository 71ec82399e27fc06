"""Allow ``python -m target_klaviyo``."""

from target_klaviyo.target import TargetKlaviyo

TargetKlaviyo.cli()
