/* fieldsync: the daemon, `fieldsync run`: syncs continuously, wakes on new records, metrics. */
#ifndef FSA_AGENT_RUN_H
#define FSA_AGENT_RUN_H

/* Runs the daemon on the journal at db_path with its command-line arguments (after "run").
 * Returns the process exit status: 0 after SIGTERM/SIGINT, 1 on errors, 2 on usage errors. */
int fsa_agent_run(const char *db_path, int argc, char **argv);

#endif
