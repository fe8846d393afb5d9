"""ometria-worker: Kafka commerce events to Ometria's headless tracking API."""

__version__ = "0.1.0.dev0"
