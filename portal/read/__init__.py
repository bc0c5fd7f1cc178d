"""The read side of the GraphQL API: cases, subjects, events, assessments, audit trails."""
