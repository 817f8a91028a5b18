"""Lightning machinery every stage run uses: callbacks (validation history, checkpoints a resume
can trust, the random state, graceful stops, console lines), atomic checkpoint IO, and the choice
of the checkpoint a run resumes from."""
