"""The base layer: database, unit of work, domain errors, clock, ids, answer validation. Imports no other
package of ours and never flask."""
