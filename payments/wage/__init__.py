"""Fair wage: a batch's hold sized at publish, the fair-wage top-ups of measured times, settling holds when batches
end, and what the requester is told about a batch's pay."""
