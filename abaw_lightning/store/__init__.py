"""The stage store: stage runs identified by what produced them, and experiments as views on them.

``identity`` hashes a stage's result-deciding settings into its key; ``runs`` lays out run and view
folders; ``plan`` works out what a job (or a sweep) trains, resumes and reuses; ``lock`` keeps one
writer per run; ``views`` names the views of sweep jobs. Plain files and configs: no Lightning.
"""
