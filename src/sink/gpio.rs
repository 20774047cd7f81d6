//! `gpio:PIN=LABEL[,MS]`: drive a Raspberry Pi output pin from events (feature `gpio`).
//!
//! Two behaviours, chosen by whether `MS` is given:
//! - **while seen** (`gpio:17=person`): the pin is high while the current label (the label of
//!   the latest event) of some camera is `LABEL`, low otherwise. With several cameras the
//!   pin is high while any of them sees `LABEL`.
//! - **when seen** (`gpio:17=person,500`): every event labelled `LABEL` drives the pin high
//!   for `MS` milliseconds; another such event during the pulse extends it (a retriggerable
//!   monostable, as a PIR sensor's output behaves). A small timer thread ends the pulse, so
//!   `send` never sleeps.
//!
//! The logic ([`PinLogic`]) talks to an [`OutputPin`], not to rppal, so it is compiled and
//! tested on every build with a recording pin; only [`open`] with the `gpio` feature touches
//! the hardware. `PIN` is the BCM GPIO number (as rppal and `raspi-gpio` count), not the
//! header position.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{spec_error, Sink, SinkError};
use crate::events::Event;

/// A digital output the sink drives. Implemented for rppal's pin with feature `gpio`, and by
/// test doubles.
pub trait OutputPin: Send {
    /// Drives the pin high (`true`) or low.
    fn set(&mut self, high: bool) -> Result<(), SinkError>;
}

/// What a `gpio:` spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpioSpec {
    /// BCM GPIO number.
    pub pin: u8,
    /// The label that drives the pin.
    pub label: String,
    /// `None`: high while seen. `Some(d)`: a pulse of `d` per event with the label.
    pub pulse: Option<Duration>,
}

impl GpioSpec {
    /// Parses `gpio:PIN=LABEL[,MS]`.
    pub fn parse(spec: &str) -> Result<GpioSpec, SinkError> {
        const FORM: &str = "expected gpio:PIN=LABEL or gpio:PIN=LABEL,MS (PIN: BCM GPIO \
                            number; MS: pulse length in milliseconds)";
        let rest = spec
            .strip_prefix("gpio:")
            .ok_or_else(|| spec_error(spec, FORM))?;
        let (pin, rest) = rest.split_once('=').ok_or_else(|| spec_error(spec, FORM))?;
        let pin: u8 = pin.trim().parse().map_err(|_| {
            spec_error(
                spec,
                &format!("'{pin}' is not a GPIO number (0-255); {FORM}"),
            )
        })?;
        // A label may itself contain commas ("hot dog, sausage"): only a trailing `,digits`
        // is the pulse length.
        let (label, pulse) = match rest.rsplit_once(',') {
            Some((label, ms))
                if !ms.trim().is_empty() && ms.trim().bytes().all(|b| b.is_ascii_digit()) =>
            {
                let ms: u64 = ms.trim().parse().map_err(|_| {
                    spec_error(spec, &format!("pulse length '{ms}' is too large; {FORM}"))
                })?;
                if ms == 0 {
                    return Err(spec_error(
                        spec,
                        &format!("a pulse of 0 ms does nothing; {FORM}"),
                    ));
                }
                (label, Some(Duration::from_millis(ms)))
            }
            _ => (rest, None),
        };
        let label = label.trim();
        if label.is_empty() {
            return Err(spec_error(spec, &format!("no label; {FORM}")));
        }
        Ok(GpioSpec {
            pin,
            label: label.to_string(),
            pulse,
        })
    }
}

impl GpioSpec {
    /// `gpio:PIN=LABEL[,MS]`, normalised.
    pub fn name(&self) -> String {
        match self.pulse {
            None => format!("gpio:{}={}", self.pin, self.label),
            Some(d) => format!("gpio:{}={},{}", self.pin, self.label, d.as_millis()),
        }
    }
}

/// The pin's behaviour, independent of time sources and threads: events and clock ticks go
/// in, pin levels come out. [`GpioSink`] drives it from `send` and a timer thread.
pub struct PinLogic<P: OutputPin> {
    spec: GpioSpec,
    pin: P,
    /// Level last written to the pin (written only on change).
    high: bool,
    /// While seen: each camera's current label.
    current: HashMap<String, String>,
    /// When seen: when the running pulse ends.
    pulse_until: Option<Instant>,
}

impl<P: OutputPin> PinLogic<P> {
    /// Starts with the pin driven low, so a pin left high by a previous run (or floating)
    /// starts from a known level.
    pub fn new(spec: GpioSpec, mut pin: P) -> Result<PinLogic<P>, SinkError> {
        pin.set(false)?;
        Ok(PinLogic {
            spec,
            pin,
            high: false,
            current: HashMap::new(),
            pulse_until: None,
        })
    }

    /// Takes one event seen at `now`.
    pub fn on_event(&mut self, camera: &str, label: &str, now: Instant) -> Result<(), SinkError> {
        match self.spec.pulse {
            None => {
                self.current.insert(camera.to_string(), label.to_string());
                let want = self.current.values().any(|l| *l == self.spec.label);
                self.drive(want)
            }
            Some(length) => {
                if label == self.spec.label {
                    self.pulse_until = Some(now + length);
                    self.drive(true)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Ends a pulse whose time is up at `now`.
    pub fn tick(&mut self, now: Instant) -> Result<(), SinkError> {
        match self.pulse_until {
            Some(until) if now >= until => {
                self.pulse_until = None;
                self.drive(false)
            }
            _ => Ok(()),
        }
    }

    /// When the running pulse ends, if one is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.pulse_until
    }

    /// Whether the pin is driven high now.
    pub fn is_high(&self) -> bool {
        self.high
    }

    /// Drives the pin low and forgets all state (at close).
    pub fn reset(&mut self) -> Result<(), SinkError> {
        self.current.clear();
        self.pulse_until = None;
        self.drive(false)
    }

    fn drive(&mut self, high: bool) -> Result<(), SinkError> {
        if high != self.high {
            self.pin.set(high)?;
            self.high = high;
        }
        Ok(())
    }
}

/// State shared between the sink and its pulse timer.
struct Shared<P: OutputPin> {
    logic: Mutex<PinLogic<P>>,
    /// Woken when a pulse starts or is extended, and at close.
    wake: Condvar,
    stop: Mutex<bool>,
}

impl<P: OutputPin> Shared<P> {
    fn logic(&self) -> MutexGuard<'_, PinLogic<P>> {
        // A panic while holding the lock cannot leave PinLogic inconsistent in a way that
        // matters more than the pin staying dark: keep driving it.
        self.logic.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The GPIO sink. See the [module documentation](self).
pub struct GpioSink<P: OutputPin + 'static> {
    name: String,
    shared: Arc<Shared<P>>,
    timer: Option<JoinHandle<()>>,
}

impl<P: OutputPin + 'static> GpioSink<P> {
    /// A sink driving `pin` as `spec` says (the pin is set low first). Public so that other
    /// outputs (and tests) can reuse the logic.
    pub fn with_pin(spec: GpioSpec, pin: P) -> Result<GpioSink<P>, SinkError> {
        let name = spec.name();
        let pulsed = spec.pulse.is_some();
        let shared = Arc::new(Shared {
            logic: Mutex::new(PinLogic::new(spec, pin)?),
            wake: Condvar::new(),
            stop: Mutex::new(false),
        });
        let timer = if pulsed {
            let shared = Arc::clone(&shared);
            let thread_name = name.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sink {name}"))
                .spawn(move || pulse_timer(&shared, &thread_name))
                .map_err(|e| SinkError::Failed {
                    sink: name.clone(),
                    reason: format!("cannot start the pulse timer thread: {e}"),
                })?;
            Some(handle)
        } else {
            None
        };
        Ok(GpioSink {
            name,
            shared,
            timer,
        })
    }

    /// Whether the pin is driven high now.
    pub fn is_high(&self) -> bool {
        self.shared.logic().is_high()
    }

    fn stop_timer(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(timer) = self.timer.take() {
            // The timer only waits on the condition variable, so it returns at once.
            let _ = timer.join();
        }
    }
}

/// Ends pulses when their time is up; sleeps until the next deadline or a wake-up.
fn pulse_timer<P: OutputPin>(shared: &Shared<P>, name: &str) {
    let mut stop = shared.stop.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if *stop {
            return;
        }
        let now = Instant::now();
        let deadline = {
            let mut logic = shared.logic();
            if let Err(e) = logic.tick(now) {
                log::warn!("{name}: {e}");
            }
            logic.deadline()
        };
        // `stop`'s mutex is held from reading the deadline until the wait begins, and
        // `send` takes it before notifying: a pulse started in between cannot be missed.
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(now),
            None => Duration::from_secs(3600),
        };
        stop = match shared.wake.wait_timeout(stop, wait) {
            Ok((guard, _)) => guard,
            Err(e) => e.into_inner().0,
        };
    }
}

impl<P: OutputPin + 'static> Sink for GpioSink<P> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn send(&mut self, event: &Event) -> Result<(), SinkError> {
        let started = {
            let mut logic = self.shared.logic();
            let before = logic.deadline();
            logic.on_event(&event.camera, &event.label, Instant::now())?;
            logic.deadline() != before
        };
        if started {
            let _held = self.shared.stop.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        Ok(())
    }

    fn close(&mut self, _timeout: Duration) -> Result<(), SinkError> {
        self.stop_timer();
        self.shared.logic().reset()
    }
}

impl<P: OutputPin + 'static> Drop for GpioSink<P> {
    fn drop(&mut self) {
        self.stop_timer();
    }
}

/// Checks a `gpio:` spec without touching the hardware; returns the sink's name. Without
/// feature `gpio`, fails as [`open`] does.
pub fn check(spec: &str) -> Result<String, SinkError> {
    let parsed = GpioSpec::parse(spec)?;
    if cfg!(not(feature = "gpio")) {
        return Err(no_gpio(spec));
    }
    Ok(parsed.name())
}

/// The error for a `gpio:` sink in a build without feature `gpio`.
fn no_gpio(spec: &str) -> SinkError {
    SinkError::Failed {
        sink: spec.to_string(),
        reason: "this edgeclip was built without GPIO support; rebuild with \
                 `cargo build --release --features gpio` (Raspberry Pi)"
            .to_string(),
    }
}

/// Opens `gpio:PIN=LABEL[,MS]` on the Raspberry Pi's GPIO (feature `gpio`).
#[cfg(feature = "gpio")]
pub fn open(spec: &str) -> Result<Box<dyn Sink>, SinkError> {
    let parsed = GpioSpec::parse(spec)?;
    let pin = RppalPin::open(parsed.pin)?;
    Ok(Box::new(GpioSink::with_pin(parsed, pin)?))
}

/// Without feature `gpio` there is no GPIO support: says how to get it.
#[cfg(not(feature = "gpio"))]
pub fn open(spec: &str) -> Result<Box<dyn Sink>, SinkError> {
    // Parse anyway, so a typo is reported as such rather than as a missing feature.
    GpioSpec::parse(spec)?;
    Err(no_gpio(spec))
}

/// A Raspberry Pi output pin through rppal.
#[cfg(feature = "gpio")]
pub struct RppalPin {
    pin: rppal::gpio::OutputPin,
}

#[cfg(feature = "gpio")]
impl RppalPin {
    /// Claims BCM GPIO `pin` as an output. Fails clearly off a Pi (or without access to
    /// `/dev/gpiomem`).
    pub fn open(pin: u8) -> Result<RppalPin, SinkError> {
        let fail = |e: rppal::gpio::Error| SinkError::Failed {
            sink: format!("gpio:{pin}"),
            reason: format!("cannot open GPIO (not a Raspberry Pi?): {e}"),
        };
        let gpio = rppal::gpio::Gpio::new().map_err(fail)?;
        let pin = gpio.get(pin).map_err(fail)?.into_output();
        Ok(RppalPin { pin })
    }
}

#[cfg(feature = "gpio")]
impl OutputPin for RppalPin {
    fn set(&mut self, high: bool) -> Result<(), SinkError> {
        // rppal writes a memory-mapped register: it cannot fail once the pin is claimed.
        if high {
            self.pin.set_high();
        } else {
            self.pin.set_low();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every level written, in order.
    #[derive(Clone, Default)]
    struct FakePin(Arc<Mutex<Vec<bool>>>);

    impl FakePin {
        fn writes(&self) -> Vec<bool> {
            self.0.lock().unwrap().clone()
        }
    }

    impl OutputPin for FakePin {
        fn set(&mut self, high: bool) -> Result<(), SinkError> {
            self.0.lock().unwrap().push(high);
            Ok(())
        }
    }

    fn spec(pulse_ms: Option<u64>) -> GpioSpec {
        GpioSpec {
            pin: 17,
            label: "person".to_string(),
            pulse: pulse_ms.map(Duration::from_millis),
        }
    }

    fn event(camera: &str, label: &str) -> Event {
        Event {
            id: "x".to_string(),
            ts: "2025-01-01T00:00:00.000Z".to_string(),
            camera: camera.to_string(),
            frame: 1,
            label: label.to_string(),
            score: 0.8,
            top: vec![],
            latency_ms: 1.0,
            snapshot: None,
        }
    }

    #[test]
    fn parses_both_forms_and_rejects_bad_ones() {
        assert_eq!(GpioSpec::parse("gpio:17=person").unwrap(), spec(None));
        assert_eq!(
            GpioSpec::parse("gpio:17=person,250").unwrap(),
            spec(Some(250))
        );
        let commas = GpioSpec::parse("gpio:4=hot dog, sausage").unwrap();
        assert_eq!(commas.label, "hot dog, sausage");
        assert_eq!(commas.pulse, None);
        for bad in [
            "gpio:",
            "gpio:17",
            "gpio:x=person",
            "gpio:300=person",
            "gpio:17=",
            "gpio:17=person,0",
            "gpio:17=,100",
        ] {
            let err = GpioSpec::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} parsed"));
            let text = err.to_string();
            assert!(
                text.contains(bad) && text.contains("gpio:PIN=LABEL"),
                "{text}"
            );
        }
    }

    #[test]
    fn while_seen_follows_the_latest_label_of_any_camera() {
        let pin = FakePin::default();
        let mut logic = PinLogic::new(spec(None), pin.clone()).unwrap();
        let t = Instant::now();
        logic.on_event("door", "cat", t).unwrap();
        logic.on_event("door", "person", t).unwrap();
        logic.on_event("door", "person", t).unwrap(); // no write when unchanged
        logic.on_event("yard", "person", t).unwrap();
        logic.on_event("door", "cat", t).unwrap(); // yard still sees a person
        assert!(logic.is_high());
        logic.on_event("yard", "unknown", t).unwrap();
        assert!(!logic.is_high());
        // Initial low, one rise, one fall: transitions only.
        assert_eq!(pin.writes(), vec![false, true, false]);
        logic.tick(t + Duration::from_secs(100)).unwrap(); // no pulses in this mode
        assert_eq!(pin.writes(), vec![false, true, false]);
    }

    #[test]
    fn when_seen_pulses_and_retriggers() {
        let pin = FakePin::default();
        let mut logic = PinLogic::new(spec(Some(100)), pin.clone()).unwrap();
        let t = Instant::now();
        let ms = Duration::from_millis;
        logic.on_event("door", "cat", t).unwrap();
        assert!(!logic.is_high());
        logic.on_event("door", "person", t).unwrap();
        assert!(logic.is_high());
        logic.tick(t + ms(60)).unwrap();
        assert!(logic.is_high());
        // A second sighting extends the pulse to 60 + 100 ms.
        logic.on_event("door", "person", t + ms(60)).unwrap();
        logic.tick(t + ms(120)).unwrap();
        assert!(logic.is_high());
        logic.tick(t + ms(160)).unwrap();
        assert!(!logic.is_high());
        assert_eq!(logic.deadline(), None);
        // A new sighting after the pulse starts a new one.
        logic.on_event("door", "person", t + ms(200)).unwrap();
        logic.tick(t + ms(300)).unwrap();
        assert_eq!(pin.writes(), vec![false, true, false, true, false]);
    }

    #[test]
    fn the_sink_ends_pulses_from_its_timer_thread() {
        let pin = FakePin::default();
        let mut sink = GpioSink::with_pin(spec(Some(40)), pin.clone()).unwrap();
        assert_eq!(sink.name(), "gpio:17=person,40");
        let started = Instant::now();
        sink.send(&event("door", "person")).unwrap();
        assert!(sink.is_high(), "send drives the pin at once");
        let deadline = started + Duration::from_secs(5);
        while sink.is_high() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!sink.is_high(), "the pulse did not end");
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "the pulse ended early"
        );
        assert_eq!(pin.writes(), vec![false, true, false]);
        sink.close(Duration::ZERO).unwrap();
    }

    #[test]
    fn close_drives_the_pin_low() {
        let pin = FakePin::default();
        let mut sink = GpioSink::with_pin(spec(None), pin.clone()).unwrap();
        sink.send(&event("door", "person")).unwrap();
        assert!(sink.is_high());
        sink.close(Duration::ZERO).unwrap();
        assert_eq!(pin.writes(), vec![false, true, false]);
    }

    #[cfg(not(feature = "gpio"))]
    #[test]
    fn without_the_feature_open_says_how_to_get_it() {
        let err = open("gpio:17=person")
            .err()
            .expect("must fail without feature gpio");
        assert!(err.to_string().contains("--features gpio"), "{err}");
    }

    #[cfg(feature = "gpio")]
    #[test]
    fn off_a_pi_open_fails_clearly() {
        let on_a_pi = std::fs::read_to_string("/proc/device-tree/model")
            .is_ok_and(|model| model.contains("Raspberry Pi"));
        match open("gpio:17=person") {
            Err(err) => {
                let text = err.to_string();
                assert!(
                    text.contains("gpio:17: cannot open GPIO (not a Raspberry Pi?): "),
                    "{text}"
                );
            }
            Ok(_) => assert!(on_a_pi, "opened GPIO off a Raspberry Pi"),
        }
    }
}
