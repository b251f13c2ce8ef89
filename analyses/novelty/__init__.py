"""Do failures cluster at instance novelty or at complexity? Test problems scored against each member's
regenerated training instances."""
