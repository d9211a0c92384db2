"""Workflow stages as plain functions: prepare → split → extract → fit → evaluate → report.

Each Snakemake rule calls exactly one of these through a thin adapter script that passes the rule's
params; nothing here reads the workflow's global config.
"""
