"""MaggyOperator, its trigger and its extra link."""
