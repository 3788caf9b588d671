/* libfieldsync: the simulator's hook, documented in docs/api.md (not installed, not exported). */
#ifndef FSA_AGENT_LIB_SIM_HOOK_H
#define FSA_AGENT_LIB_SIM_HOOK_H

#include "fieldsync/fieldsync.h"
#include "port/port.h"

/*
 * fieldsync_open with a port of the caller's: fieldsync-sim runs thousands of devices in one
 * process, each on a sim port (port/sim/sim.h) with its own virtual clock and seeded randomness,
 * so that retries and backoffs take no real time and a run can be replayed. The port must outlive
 * the handle, and nothing else of the port layer is given to the caller. The function is in the
 * static library our programs link (fsa_lib); libfieldsync.so does not export it.
 */
fieldsync_status_t fsl__open_with_port(const fieldsync_config_t *cfg, const fsa_port_t *port,
                                       fieldsync_t **out);

#endif
