"""Robot-side pure code: the pose convention, the action-to-target step and the safety
shield that every command to the arm goes through."""
