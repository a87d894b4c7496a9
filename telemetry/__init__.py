"""Telemetry: Prometheus metrics, OpenTelemetry traces and structured logs; imported by every process."""
