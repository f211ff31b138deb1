"""What a person reads: formatting, the dashboard and the reports."""
