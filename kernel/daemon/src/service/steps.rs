//! The step calls: `RunStep` (an `srun` starts a step and reads its tasks' output) and
//! `StepIo` (a node's agent streams its part of a step's output and task ends). Output
//! goes from the agent's stream to the `srun`'s through a bounded channel, outside the
//! controller's lock: a slow `srun` slows its own tasks' output (the agent's pipes
//! fill), never the controller. The lock is taken only to start, signal and end steps.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gantry_api as api;
use gantry_kernel::JobId;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{unix_now, PageStream, Shared};
use crate::controller::{check_step_bounds, Relay};

/// Output chunks waiting for a slow `srun`, per step.
const RELAY_DEPTH: usize = 256;
/// The largest output chunk an agent may send, in bytes.
pub const MAX_OUTPUT_CHUNK: usize = 256 * 1024;
/// How often a step that waits for other steps' resources tries again.
const BUSY_RETRY: Duration = Duration::from_millis(500);

pub type StepEvents = PageStream<api::StepEvent>;

fn event(what: api::step_event::What) -> api::StepEvent {
    api::StepEvent { what: Some(what) }
}

pub(super) async fn run_step(
    shared: Arc<Shared>,
    req: Request<Streaming<api::StepInput>>,
) -> Result<Response<StepEvents>, Status> {
    let now = unix_now();
    let who = shared.caller("RunStep", &req, now)?;
    let mut input = req.into_inner();
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the call carries no step request"))?;
    let Some(api::step_input::What::Start(step)) = first.what else {
        return Err(Status::invalid_argument(
            "the first message of a step must be its request",
        ));
    };
    check_step_bounds(&step, shared.lock().max_request_bytes()).map_err(|r| shared.status(r))?;
    let job = JobId(step.job_id);
    let (out_tx, out_rx) = mpsc::channel(RELAY_DEPTH);
    let (events_tx, mut events_rx) = mpsc::channel(RELAY_DEPTH);
    let (end_tx, end_rx) = oneshot::channel();
    let mut relay = Some(Relay {
        events: events_tx,
        end: end_tx,
    });
    // The first try answers a step that can never run with an error status at once.
    let started = shared
        .lock()
        .start_step(&who, &step, &mut relay, now)
        .map_err(|r| shared.status(r))?;
    let shared2 = shared.clone();
    tokio::spawn(async move {
        let shared = shared2;
        let started = match started {
            Some(s) => s,
            None => {
                let waiting = event(api::step_event::What::Waiting(
                    "Requested nodes are busy".into(),
                ));
                if out_tx.send(Ok(waiting)).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(BUSY_RETRY) => {}
                        _ = out_tx.closed() => return,
                    }
                    let r = shared
                        .lock()
                        .start_step(&who, &step, &mut relay, unix_now());
                    match r {
                        Ok(Some(s)) => break s,
                        Ok(None) => continue,
                        Err(r) => {
                            let _ = out_tx.send(Err(shared.status(r))).await;
                            return;
                        }
                    }
                }
            }
        };
        let step_id = started.step_id;
        if out_tx
            .send(Ok(event(api::step_event::What::Started(started))))
            .await
            .is_err()
        {
            shared.lock().abandon_step(job, step_id);
        }
        // Signals and standard input from srun; its input closing early ends the step.
        let inputs = shared.clone();
        tokio::spawn(async move {
            loop {
                match input.message().await {
                    Ok(Some(api::StepInput {
                        what: Some(api::step_input::What::Signal(sig)),
                    })) => inputs.lock().signal_step(job, step_id, sig),
                    Ok(Some(api::StepInput {
                        what: Some(api::step_input::What::Stdin(data)),
                    })) => {
                        if data.len() > MAX_OUTPUT_CHUNK {
                            tracing::warn!(
                                job = job.0,
                                step = step_id,
                                bytes = data.len(),
                                "standard input chunk over the bound; ending the step"
                            );
                            break;
                        }
                        inputs.lock().step_input(job, step_id, data)
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            inputs.lock().abandon_step(job, step_id);
        });
        let mut listening = true;
        while let Some(ev) = events_rx.recv().await {
            if listening && out_tx.send(Ok(ev)).await.is_err() {
                // srun is gone; keep draining so the nodes' streams finish.
                listening = false;
            }
        }
        if let Ok(end) = end_rx.await {
            let _ = out_tx
                .send(Ok(event(api::step_event::What::Ended(end))))
                .await;
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
}

pub(super) async fn step_io(
    shared: Arc<Shared>,
    req: Request<Streaming<api::StepIoMessage>>,
) -> Result<Response<api::StepIoReply>, Status> {
    let now = unix_now();
    let (meta, ext, mut stream) = req.into_parts();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the step stream carries no header"))?;
    let Some(api::step_io_message::What::Header(h)) = first.what else {
        return Err(Status::invalid_argument(
            "the first message of a step stream must be its header",
        ));
    };
    // A node speaks for itself only: its credential must be the header's node's.
    shared
        .auth
        .agent(&Request::from_parts(meta, ext, ()), now, &h.node)?;
    let job = JobId(h.job_id);
    let step = h.step_id;
    let (part, mut events) = {
        let c = shared.lock();
        let part = c
            .step_part(&h.node, job, step)
            .map_err(|r| shared.status(r))?;
        (part, c.relays().events(job, step))
    };
    let mut ended: HashSet<u32> = HashSet::new();
    let lost = loop {
        let msg = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break ended.len() < part.tasks.len(),
            Err(e) => {
                tracing::warn!(job = job.0, step, node = %h.node, error = %e, "step stream from the node broke");
                break true;
            }
        };
        use api::step_io_message::What;
        let (task, ev) = match msg.what {
            Some(What::Output(mut o)) => {
                o.data.truncate(MAX_OUTPUT_CHUNK);
                (o.task, api::step_event::What::Output(o))
            }
            Some(What::TaskEnded(mut t)) => {
                if !part.tasks.contains(&t.task) || !ended.insert(t.task) {
                    tracing::warn!(job = job.0, step, node = %h.node, task = t.task, "end of a task the node does not run (or twice); ignored");
                    continue;
                }
                t.message.truncate(1024);
                shared.lock().step_task_ended(job, step, &t);
                (t.task, api::step_event::What::TaskEnded(t))
            }
            _ => continue,
        };
        if !part.tasks.contains(&task) {
            tracing::warn!(job = job.0, step, node = %h.node, task, "output of a task the node does not run; ignored");
            continue;
        }
        if let Some(tx) = &events {
            if tx.send(event(ev)).await.is_err() {
                events = None;
            }
        }
    };
    drop(events);
    shared
        .lock()
        .step_node_done(job, step, &h.node, lost, unix_now())
        .map_err(|r| shared.status(r))?;
    Ok(Response::new(api::StepIoReply {}))
}
