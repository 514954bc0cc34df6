"""Transparency reports (``stormwatch report``): aggregates with k-suppression, case studies, charts."""
