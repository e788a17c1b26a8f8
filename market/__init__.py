"""crowdmarket: the task market (projects, items, batches/HITs, assignments, answers) and the app shell."""
