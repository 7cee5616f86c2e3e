"""The worker side: its context, the training supervisor and child, the child protocol, inference, the
offline environment. Only worker processes import it; torch and ultralytics load in children and inference.

Must not import ``api_client`` or ``tasks`` (an import-linter contract).
"""
