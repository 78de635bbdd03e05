//! The MQTT variant's link (`--features mqtt`): the STM32F407's Ethernet
//! MAC and a LAN8720 PHY on RMII, embassy-net with DHCP, and
//! `telemark-mqtt`'s device side in two tasks of their own.

use core::net::SocketAddr;

use defmt::info;
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_stm32::eth::{Ethernet, GenericPhy, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use static_cell::StaticCell;
use telemark_mqtt::embassy_net::Tcp;
use telemark_mqtt::{Config, State};

/// Largest frame.
pub const MTU: usize = 256;
/// One inbound MQTT packet: a downlink of `MTU` with its header and topic.
const MQTT_RX: usize = MTU + 64;

/// The MAC and PHY, as `embassy-stm32` drives them.
pub type Eth = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;
/// The engine's side of the link.
pub type Link = telemark_mqtt::Link<'static, CriticalSectionRawMutex, MTU>;
type Runner = telemark_mqtt::Runner<'static, CriticalSectionRawMutex, MTU>;

/// The broker, given at build time as `IP:PORT` in `TELEMARK_BROKER`.
const BROKER: &str = match option_env!("TELEMARK_BROKER") {
    Some(broker) => broker,
    None => "192.168.1.2:1883",
};

/// Brings up the network (DHCP) and the MQTT session on `eth`, each in a
/// task of its own; `seed` seeds the TCP sequence numbers.
pub fn start(spawner: &Spawner, eth: Eth, seed: u64, device: u64) -> Link {
    static NET: StaticCell<StackResources<3>> = StaticCell::new();
    static STATE: StaticCell<State<CriticalSectionRawMutex, MTU>> = StaticCell::new();
    static BROKERS: StaticCell<[SocketAddr; 1]> = StaticCell::new();
    static MQTT_BUFFERS: StaticCell<([u8; MQTT_RX], [u8; 2 * MQTT_RX])> = StaticCell::new();
    static TCP_BUFFERS: StaticCell<([u8; 1024], [u8; 1024])> = StaticCell::new();
    let config = embassy_net::Config::dhcpv4(Default::default());
    let (stack, net) = embassy_net::new(eth, config, NET.init(StackResources::new()), seed);
    spawner.spawn(run_network(net).expect("one network task"));

    let broker: SocketAddr = match BROKER.parse() {
        Ok(addr) => addr,
        Err(_) => defmt::panic!("TELEMARK_BROKER must be IP:PORT, not {}", BROKER),
    };
    info!("MQTT broker {}", defmt::Display2Format(&broker));
    let brokers = BROKERS.init([broker]);
    let (rx, tx) = MQTT_BUFFERS.init(([0; MQTT_RX], [0; 2 * MQTT_RX]));
    let (runner, link) = match telemark_mqtt::new(
        STATE.init(State::new()),
        Config::new(device, brokers),
        rx,
        tx,
    ) {
        Ok(halves) => halves,
        Err(e) => defmt::panic!("mqtt: {}", e),
    };
    let (tcp_rx, tcp_tx) = TCP_BUFFERS.init(([0; 1024], [0; 1024]));
    spawner.spawn(run_mqtt(runner, Tcp::new(stack, tcp_rx, tcp_tx)).expect("one MQTT task"));
    link
}

#[embassy_executor::task]
async fn run_network(mut runner: embassy_net::Runner<'static, Eth>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn run_mqtt(mut runner: Runner, mut tcp: Tcp<'static>) -> ! {
    runner.run(&mut tcp).await
}
